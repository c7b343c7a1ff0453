"""Metrics of a classifier on whole splits: the logits of every example (under torchrun each
process computes its share and the shares are joined in order), then one report per split: loss,
accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix (rows: true class,
columns: predicted class). Training's final metrics and `evaluate` both come from here."""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from ..data.lengths import length_sorted_batches
from ..distributed import gather_shards
from .calibration import calibrated, calibration_report
from .tasks import in_target_units, loss_fn, multi_label_report, regression_report


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


@torch.no_grad()
def split_logits(dataset, lengths: list[int], batch_size: int, collate, logits_fn, device, num_classes: int,
                 n_global: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of a whole split, in the split's order. `dataset` is this process's
    share of the split's `n_global` examples; batches group examples of similar length."""
    logits = torch.zeros(len(dataset), num_classes)
    targets = None  # class ids, 0/1 rows or numbers: shaped by the first batch's
    for rows in length_sorted_batches(lengths, batch_size):
        inputs, target, *rest = collate([dataset[i] for i in rows])  # lengths (and windows' texts)
        logits[rows] = logits_fn(inputs.to(device), *(t.to(device) for t in rest)).float().cpu()
        if targets is None:
            targets = torch.zeros((len(dataset), *target.shape[1:]), dtype=target.dtype)
        targets[rows] = target
    if targets is None:  # this process holds none of the split
        targets = torch.zeros(0, dtype=torch.long)
    return gather_shards(logits, n_global), gather_shards(targets, n_global)


def logits_report(logits: torch.Tensor, targets: torch.Tensor, labels: list[str], task: str = "single-label",
                  thresholds: list[float] | None = None, target_scale: tuple[float, float] | None = None,
                  huber: bool = False, temperature=None) -> dict:
    """Full-set metrics of a split's logits: for classes, loss per example, accuracy, per-class,
    confusion; for label sets, F1s, subset accuracy and Hamming loss at each label's threshold (on
    the calibrated scores); for both, the calibration (`calibration.calibration_report`); for
    numbers, errors and correlations in the target's own units (`target_scale`: its mean and std).
    The loss is the trained head's own, before the temperature."""
    if task == "single-label":
        loss = F.cross_entropy(logits, targets).item()
        report = classification_report(targets.numpy(), logits.argmax(-1).numpy(), labels, loss)
        return {**report, "calibration": calibration_report(logits, targets, temperature, task)}
    loss = loss_fn(logits, targets, huber=huber).item()
    if task == "multi-label":
        report = multi_label_report(torch.sigmoid(calibrated(logits, temperature)), targets, labels,
                                    thresholds or [0.5] * len(labels), loss)
        return {**report, "calibration": calibration_report(logits, targets, temperature, task)}
    return regression_report(in_target_units(logits.reshape(-1), target_scale), in_target_units(targets, target_scale),
                             loss)


# Texts per batch of a whole-split pass: the same as training's final metrics use, so that `evaluate`
# on the training's device groups the same texts together and gives the run's metrics.json.
SPLIT_BATCH_SIZE = 64


def lead_over(scores: list[float], baseline: list[float]) -> tuple[float, float]:
    """How far `scores` lead `baseline`, fold by fold: the mean difference and its standard error
    (infinite from one fold). The one-standard-error rule (`tune`'s winner, label sets' threshold
    rule) takes the lead only where it exceeds its standard error."""
    diffs = [s - b for s, b in zip(scores, baseline)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return statistics.fmean(diffs), se
