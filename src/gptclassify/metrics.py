"""Classification metrics from predictions: accuracy, per-class precision/recall/F1, macro-F1,
confusion matrix (rows: true class, columns: predicted class)."""

from __future__ import annotations

import numpy as np


def classification_report(y_true, y_pred, labels: list[str], loss: float | None = None) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        predicted, actual = confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                            "support": int(actual)}
    report = {
        "examples": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
    if loss is not None:
        report = {"loss": float(loss), **report}
    return report
