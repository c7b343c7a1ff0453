"""Predict with an exported ONNX folder (`export --format onnx`) and no torch: onnxruntime runs the
graph, the tokenizers library cuts the texts as the run did, numpy combines a long text's windows
and applies the run's calibration. `OnnxClassifier.load(DIR).predict(texts)` answers as
`Classifier.load(RUN).predict(texts)` does (tests/test_export.py: within 1e-4).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..classifier.names import head_size, window_combine
from ..config import RunConfig
from ..data.lengths import length_sorted_batches
from ..data.tokenizer import tokenizer_from_json
from ..errors import UserError
from ..files import MAX_JSON_BYTES, read_json
from .base import TextClassifier


class OnnxClassifier(TextClassifier):
    def __init__(self, session, tokenizer, config: RunConfig):
        super().__init__(tokenizer, config)
        self.session = session

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> "OnnxClassifier":
        """An exported folder: config.json and tokenizer.json read as data, model.onnx run by onnxruntime."""
        directory = Path(directory)
        if not (directory / "model.onnx").is_file():
            raise UserError(f"{directory}: no model.onnx (--backend onnxruntime reads a folder made by "
                            "`gptclassify export RUN --format onnx --out DIR`)")
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--backend onnxruntime needs onnxruntime: pip install onnxruntime") from None
        config = RunConfig.from_json(read_json(directory / "config.json", max_bytes=MAX_JSON_BYTES),
                                     f"{directory}/config.json")
        if config.tokenizer.get("file") != "tokenizer.json":
            raise UserError(f"{directory}/config.json: an ONNX folder's tokenizer is its tokenizer.json")
        tokenizer = tokenizer_from_json(directory / "tokenizer.json", pad_id=config.policy.pad_id)
        options = onnxruntime.SessionOptions()
        # a thread per CPU this process may use (onnxruntime's own default counts physical cores, often fewer)
        options.intra_op_num_threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                   else 0)
        try:
            session = onnxruntime.InferenceSession(str(directory / "model.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"{directory}/model.onnx: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") \
                from None
        classifier = cls(session, tokenizer, config)
        classifier.run_dir = directory
        return classifier

    def logits(self, texts: list, batch_size: int | None = None) -> np.ndarray:
        """(texts, outputs) raw head outputs, a long text's windows combined as the run combines them."""
        self.check_texts(texts)
        groups = [self.encode_windows(t) for t in texts]
        encoded = [w for ws in groups for w in ws]
        owners = np.array([i for i, ws in enumerate(groups) for _ in ws], dtype=np.int64)
        out = None
        for rows in length_sorted_batches([len(e) for e in encoded], batch_size or 32):
            width = self.pad_to or max(len(encoded[i]) for i in rows)
            ids = np.full((len(rows), width), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, :len(encoded[i])], mask[r, :len(encoded[i])] = encoded[i], 1
            logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32) if out is None else out
            out[rows] = logits
        if out is None:
            return np.empty((0, head_size(self.task, self.labels)), dtype=np.float32)
        if len(encoded) == len(texts):
            return out
        how = window_combine(self.task)  # as pooling.combine_windows combines them
        combined = np.full((len(texts), out.shape[1]), -np.inf if how == "max" else 0.0, np.float32)
        if how == "max":
            np.maximum.at(combined, owners, out)
            return combined
        np.add.at(combined, owners, out)
        return combined / np.bincount(owners, minlength=len(texts))[:, None]

    def probabilities(self, texts: list, batch_size: int | None = None) -> np.ndarray:
        """As `Classifier.probabilities`: the calibrated logits' softmax (multi-label: a sigmoid per
        label; regression: the value in the target's units)."""
        logits = self.logits(texts, batch_size).astype(np.float64)
        if self.config.temperature is not None:
            logits = logits / np.asarray(self.config.temperature, dtype=np.float64)
        if self.task == "single-label":
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        if self.task == "multi-label":
            return 1.0 / (1.0 + np.exp(-logits))
        mean, std = self.config.target_scale or (0.0, 1.0)
        return logits * std + mean
