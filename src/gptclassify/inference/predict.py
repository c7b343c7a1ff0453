"""Classify new text with a trained run: `Classifier.load(RUN).predict(texts)`.

Preprocessing is exactly the training run's: its tokenizer, truncation to its max_length, its
padding width and pooling. Texts are sorted by length and batched, so 1,000 texts are a few
dozen forward passes of one loaded model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.batches import Collate, flatten_windows
from ..data.lengths import length_sorted_batches
from ..device import autocast_for, no_grad_batching, resolve_device
from ..classifier.prefix import run_logits, run_prefix
from ..classifier.calibration import calibrated
from ..classifier.pooling import combine_windows
from ..classifier.names import head_size, window_combine
from ..classifier.tasks import in_target_units, probabilities as task_probabilities
from ..config import RunConfig
from ..rundir import load_run
from .base import TextClassifier


class Classifier(TextClassifier):
    def __init__(self, model, tokenizer, config: RunConfig, device: torch.device):
        super().__init__(tokenizer, config)
        self.model, self.device = model, device
        self.autocast = autocast_for(device)
        self.prefix = run_prefix(model, config.policy.first_trainable_block, config.training.trainable,
                                 config.policy.prefix_dtype, device)  # the frozen layers, in the run's precision

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "Classifier":
        """Load a run directory: safetensors and JSON only, nothing executed from it."""
        dev = resolve_device(device)
        model, tokenizer, config = load_run(Path(run_dir), str(dev))
        classifier = cls(model, tokenizer, config, dev)
        classifier.run_dir = Path(run_dir)
        return classifier

    def probabilities(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """(len(texts), num_classes) class probabilities (a softmax of the calibrated logits; for
        multi-label, a sigmoid per label; for regression, (len(texts), 1) values in the target's
        units), in the order given. Batches of `batch_size` texts; by default 32 on a CPU, and on
        CUDA as many as fill `device.GPU_BATCH_TOKENS` positions."""
        probs = task_probabilities(self.task, calibrated(self.logits(texts, batch_size), self.config.temperature))
        return in_target_units(probs, self.config.target_scale) if self.task == "regression" else probs

    @torch.inference_mode()
    def logits(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """The head's raw outputs for each text (a long text's windows combined), before calibration."""
        self.check_texts(texts)
        # every window; a text is one unless read in chunks
        encoded, owners = flatten_windows([self.encode_windows(t) for t in texts])
        logits = torch.empty(len(encoded), head_size(self.task, self.labels))
        collate = Collate(self.tokenizer.pad_id, self.pad_to)
        texts_per_batch, tokens_per_batch = (batch_size, None) if batch_size else no_grad_batching(self.device, 32)
        for rows in length_sorted_batches([len(e) for e in encoded], texts_per_batch, tokens_per_batch):
            ids, _, lengths = collate([(encoded[i], 0) for i in rows])
            with self.autocast():
                out = run_logits(self.model, self.prefix, ids.to(self.device), lengths.to(self.device), self.pooling)
            logits[rows] = out.float().cpu()
        if len(encoded) > len(texts):
            logits = combine_windows(logits, owners, window_combine(self.task))
        return logits


def classify_text(text: str, classifier: Classifier | str | Path) -> str:
    """The book's `classify_review`, for any run: the predicted label of one text."""
    if not isinstance(classifier, Classifier):
        classifier = Classifier.load(classifier)
    prediction = classifier.predict(text)
    return prediction.get("label", prediction.get("labels", prediction.get("value")))
