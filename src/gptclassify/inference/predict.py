"""Classify new text with a trained run: `Classifier.load(RUN).predict(texts)`.

Preprocessing is exactly the training run's: its tokenizer, truncation to its max_length, its
padding width and pooling. Texts are sorted by length and batched, so 1,000 texts are a few
dozen forward passes of one loaded model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.batches import Collate, flatten_windows, length_sorted_batches
from ..device import autocast_for, no_grad_batching, resolve_device
from ..classifier.prefix import run_logits, run_prefix
from ..classifier.calibration import calibrated
from ..classifier.pooling import combine_windows
from ..classifier.tasks import head_size, in_target_units, probabilities as task_probabilities, window_combine
from ..config import RunConfig
from ..rundir import load_run
from ..data.chunks import encode_whole, windows
from ..data.tokenizer import keep
from ..errors import UserError


class Classifier:
    def __init__(self, model, tokenizer, config: RunConfig, device: torch.device):
        self.model, self.tokenizer, self.config, self.device = model, tokenizer, config, device
        self.labels = config.labels
        self.max_length = config.policy.max_length
        self.truncation = config.policy.truncation
        self.pad_to = config.policy.pad_to
        self.pooling = config.policy.pooling
        self.chunking = config.policy.chunking  # --truncation chunks: a long text is read in windows
        self.autocast = autocast_for(device)
        self.run_dir = None  # set by load()
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

    def encode(self, text) -> list[int]:
        """A text's ids as the run cut them; a pair (text, text_pair) joined as the run joined them."""
        if isinstance(text, (tuple, list)):
            return self.tokenizer.fit(self.tokenizer.encode_raw(tuple(text), self.max_length), self.max_length)
        ids = keep(self.tokenizer.encode(text, self.max_length, self.truncation), self.max_length, self.truncation,
                   len(self.tokenizer.prefix))
        return ids or [self.tokenizer.pad_id]  # an empty text is read as the end-of-text token

    def encode_windows(self, text) -> list[list[int]]:
        """A text's windows as the run cut them (one, unless the run read long texts in chunks)."""
        if self.chunking is None or isinstance(text, (tuple, list)):
            return [self.encode(text)]
        ids = encode_whole(self.tokenizer, text, self.max_length, self.chunking)
        return [w or [self.tokenizer.pad_id] for w in windows(ids, self.max_length, self.chunking,
                                                                len(self.tokenizer.prefix))]

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def pairs(self) -> bool:
        """Whether the run was trained on pairs of texts (prepare's --text-pair-column)."""
        return bool(self.config.data.get("dataset", {}).get("text_pair_column"))

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
        if any(isinstance(t, (tuple, list)) != self.pairs for t in texts):
            raise UserError("this run classifies pairs of texts: give (text, text_pair) tuples" if self.pairs else
                            "this run classifies single texts, not pairs")
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

    def predict(self, texts: str | list[str], batch_size: int | None = None, min_score: float | None = None):
        """Per text: {"label", "score", "probabilities": {label: p}} (multi-label: {"labels": the
        labels over their thresholds, "scores": {label: p}}; regression: {"value": x}); a single
        string gives one dict. Scores are calibrated (the run's temperature). With `min_score`, a
        text whose top score is under it is left unlabelled: its "label" is None."""
        check_min_score(min_score, self.task)
        single = isinstance(texts, (str, tuple))  # a text, or one (text, text_pair)
        probs = self.probabilities([texts] if single else list(texts), batch_size)
        out = abstain([self.prediction(row) for row in probs.tolist()], min_score)
        return out[0] if single else out

    def prediction(self, row: list[float]) -> dict:
        if self.task == "regression":
            return {"value": row[0]}
        if self.task == "multi-label":
            thresholds = self.config.thresholds or [0.5] * len(self.labels)
            return {"labels": [label for label, p, t in zip(self.labels, row, thresholds) if p >= t],
                    "scores": dict(zip(self.labels, row))}
        best = max(range(len(row)), key=row.__getitem__)
        return {"label": self.labels[best], "score": row[best], "probabilities": dict(zip(self.labels, row))}


def check_min_score(min_score: float | None, task: str) -> None:
    if min_score is None:
        return
    if task != "single-label":
        raise UserError(f"--min-score leaves a text without its one class; a {task} run has none to withhold")
    if not 0 <= min_score <= 1:
        raise UserError(f"--min-score is a probability, 0 to 1, not {min_score:g}")


def abstain(predictions: list[dict], min_score: float | None) -> list[dict]:
    """Predictions whose top score is under `min_score` with their label withheld (None): the texts a
    person should look at. Scores and probabilities are kept."""
    if min_score is None:
        return predictions
    return [{**p, "label": None} if p["score"] < min_score else p for p in predictions]


def classify_text(text: str, classifier: Classifier | str | Path) -> str:
    """The book's `classify_review`, for any run: the predicted label of one text."""
    if not isinstance(classifier, Classifier):
        classifier = Classifier.load(classifier)
    prediction = classifier.predict(text)
    return prediction.get("label", prediction.get("labels", prediction.get("value")))
