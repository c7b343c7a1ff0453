"""What every backend of a trained run shares: its texts cut and joined as the run's were, and its
scores made into predictions. Torch-free: the torch `Classifier` (predict.py) and the ONNX Runtime
one (onnx_runtime.py) are this plus a way to compute logits.
"""

from __future__ import annotations

from ..config import RunConfig
from ..data.chunks import encode_whole, windows
from ..data.tokenizer import Tokenizer, keep
from ..errors import UserError


class TextClassifier:
    """A run's labels, task and text policy; `probabilities(texts)` is the backend's."""

    def __init__(self, tokenizer: Tokenizer, config: RunConfig):
        self.tokenizer, self.config = tokenizer, config
        self.labels = config.labels
        self.max_length = config.policy.max_length
        self.truncation = config.policy.truncation
        self.pad_to = config.policy.pad_to
        self.pooling = config.policy.pooling
        self.chunking = config.policy.chunking  # --truncation chunks: a long text is read in windows
        self.run_dir = None  # set by load()

    def probabilities(self, texts: list, batch_size: int | None = None):
        """(len(texts), outputs) scores, as rows `prediction` reads: the backend's."""
        raise NotImplementedError

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

    def check_texts(self, texts: list) -> None:
        if any(isinstance(t, (tuple, list)) != self.pairs for t in texts):
            raise UserError("this run classifies pairs of texts: give (text, text_pair) tuples" if self.pairs else
                            "this run classifies single texts, not pairs")

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
