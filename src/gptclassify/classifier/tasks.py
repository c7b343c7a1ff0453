"""What the head's outputs mean, for each label shape (`data/tasks.py` reads the labels):

  single-label  n logits, softmax; cross-entropy; accuracy           (targets: class ids, int64)
  multi-label   n logits, a sigmoid each; binary cross-entropy;      (targets: 0/1 per label, float)
                micro-F1 at each label's threshold (`thresholds.py` chooses them)
  regression    1 output, the target standardized on the training    (targets: standardized, float)
                split; mean squared error (or Huber); R²

The loss is told by the targets' shape and type, so the training step, the loss estimates and the
torchrun path are the same code for every task. Reports are in the user's units: a regression's
outputs are scaled back before its errors are measured.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def task_of(targets: torch.Tensor) -> str:
    if not targets.is_floating_point():
        return "single-label"
    return "multi-label" if targets.dim() == 2 else "regression"


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
            reduction: str = "mean", huber: bool = False) -> torch.Tensor:
    """Cross-entropy (class ids), binary cross-entropy per label (0/1 rows; `weight`: each label's
    positive weight), or squared error (numbers; Huber with `huber`) of the head's outputs."""
    task = task_of(targets)
    if task == "single-label":
        return F.cross_entropy(logits, targets, weight=weight, reduction=reduction)
    if task == "multi-label":
        per_label = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
        per_example = per_label.mean(-1)
    else:
        out = logits.reshape(-1)
        per_example = F.huber_loss(out, targets, reduction="none") if huber else F.mse_loss(out, targets, reduction="none")
    return per_example.sum() if reduction == "sum" else per_example.mean()


def balanced_positive_weights(targets: list[list[float]]) -> torch.Tensor:
    """Per label, its negatives over its positives in the training split (1 for a label never seen)."""
    t = torch.tensor(targets, dtype=torch.float32)
    positives = t.sum(0)
    return torch.where(positives > 0, (len(t) - positives) / positives.clamp(min=1), torch.ones_like(positives))


def standardize(values: list[float], scale) -> list[float]:
    """Regression targets as the run trains on them: (value - mean) / std, `scale` = (mean, std)."""
    mean, std = scale or (0.0, 1.0)
    return [(v - mean) / std for v in values]


def in_target_units(outputs: torch.Tensor, scale) -> torch.Tensor:
    """The head's standardized outputs (or targets) back in the target's own units."""
    mean, std = scale or (0.0, 1.0)
    return outputs * std + mean


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    if task == "single-label":
        return torch.softmax(logits.float(), dim=-1)
    if task == "multi-label":
        return torch.sigmoid(logits.float())
    return logits.float()


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((truth & predicted).sum())
    denominator = float(truth.sum() + predicted.sum())
    return 2 * tp / denominator if denominator else 0.0


def multi_label_report(probs: torch.Tensor, targets: torch.Tensor, labels: list[str], thresholds: list[float],
                       loss: float) -> dict:
    truth = targets.numpy() > 0.5
    predicted = probs.numpy() >= np.asarray(thresholds)[None, :]
    per_label = {}
    for j, label in enumerate(labels):
        tp = int((truth[:, j] & predicted[:, j]).sum())
        p, r = tp / max(int(predicted[:, j].sum()), 1), tp / max(int(truth[:, j].sum()), 1)
        per_label[label] = {"precision": p, "recall": r, "f1": f1(truth[:, j], predicted[:, j]),
                            "support": int(truth[:, j].sum()), "threshold": thresholds[j]}
    return {"loss": loss, "examples": int(len(truth)), "micro_f1": f1(truth.ravel(), predicted.ravel()),
            "macro_f1": float(np.mean([c["f1"] for c in per_label.values()])) if labels else 0.0,
            "subset_accuracy": float((truth == predicted).all(1).mean()) if len(truth) else float("nan"),
            "hamming_loss": float((truth != predicted).mean()) if truth.size else float("nan"),
            "per_label": per_label}


def regression_report(values: torch.Tensor, targets: torch.Tensor, loss: float) -> dict:
    """Errors and agreement of predicted `values` with true `targets`, both in the user's units."""
    v, t = values.double().numpy(), targets.double().numpy()
    err = v - t
    total = ((t - t.mean()) ** 2).sum()
    return {"loss": loss, "examples": int(len(t)), "rmse": float(np.sqrt((err ** 2).mean())),
            "mae": float(np.abs(err).mean()), "r2": float(1 - (err ** 2).sum() / total) if total else float("nan"),
            "pearson": correlation(v, t), "spearman": correlation(rank(v), rank(t))}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their mean rank (as Spearman's correlation takes them)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


HEADLINES = {"single-label": "accuracy", "multi-label": "micro-F1", "regression": "R²"}


def headline(task: str, logits: torch.Tensor, targets: torch.Tensor) -> tuple[str, float]:
    """The one number an epoch is reported by: accuracy, micro-F1 at 0.5, or R² (standardized units)."""
    if task == "single-label":
        return "accuracy", (logits.argmax(-1) == targets).float().mean().item()
    if task == "multi-label":
        truth, predicted = targets.numpy() > 0.5, logits.numpy() > 0
        return "micro-F1", f1(truth.ravel(), predicted.ravel())
    return "R²", regression_report(logits.reshape(-1), targets, 0.0)["r2"]
