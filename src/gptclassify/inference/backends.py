"""Which engine computes a run's scores: torch (a run directory, any device) or ONNX Runtime (a
folder from `export --format onnx`, CPU, torch not needed). Both answer `predict` alike."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

BACKENDS = ("torch", "onnxruntime")


def load_classifier(path: str | Path, backend: str = "torch", device: str = "auto"):
    if backend == "onnxruntime":
        if device not in ("auto", "cpu"):
            raise UserError(f"--backend onnxruntime runs on the CPU; --device {device} is the torch backend's")
        from .onnx_runtime import OnnxClassifier

        return OnnxClassifier.load(path)
    from .predict import Classifier

    return Classifier.load(path, device)
