"""Calibration: scores that are probabilities. A softmax over a fine-tuned head's logits is
usually over-confident; dividing the logits by one temperature T, fitted on the validation split
to minimize its negative log-likelihood (Guo et al. 2017), fixes most of that without changing any
prediction (the largest logit stays the largest). Multi-label runs fit one temperature per label
(each label's sigmoid is its own binary classifier); their thresholds are chosen on the calibrated
scores, so the labels predicted are the same ones.

Reported beside: the expected calibration error (ECE: the gap between confidence and accuracy,
averaged over 15 equal-width confidence bins, weighted by how many scores fall in each), the
Brier score (mean squared error of the probabilities) and the negative log-likelihood (what the
temperature minimizes on validation; on another split, whether it carried over), before and after.
The Brier score and the NLL are proper scores; the binned ECE is not, and on a few hundred texts
with a handful of mistakes it moves by a text changing bins (benchmarks/README.md, "tune").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .tasks import probabilities

# Fewer validation texts than this (multi-label: positives of a label) and no temperature is fitted:
# T stays 1, and the log says so.
MIN_TEXTS_TO_CALIBRATE = 20
MIN_POSITIVES_TO_CALIBRATE = 5
ECE_BINS = 15
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the targets under logits / temperature (class ids: softmax;
    0/1 columns: a sigmoid each)."""
    scaled = logits.double() / temperature
    if targets.is_floating_point():
        return F.binary_cross_entropy_with_logits(scaled, targets.double()).item()
    return F.cross_entropy(scaled, targets).item()


def golden_section(f, lo: float, hi: float, steps: int = 80) -> float:
    """The minimum of a unimodal f on [lo, hi]."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature (0.05 to 20) that minimizes the negative log-likelihood of `targets`. The NLL
    is convex in 1/T, so one golden-section search over log T finds its minimum."""
    log_t = golden_section(lambda x: nll(logits, targets, math.exp(x)), *_LOG_T_RANGE)
    return math.exp(log_t)


def fit_temperatures(logits: torch.Tensor, targets: torch.Tensor, task: str) -> float | list[float] | None:
    """One temperature (classes), one per label (multi-label), or None (regression, or too few texts)."""
    if task == "regression" or len(targets) < MIN_TEXTS_TO_CALIBRATE:
        return None
    if task == "multi-label":
        return [fit_temperature(logits[:, j:j + 1], targets[:, j:j + 1])
                if targets[:, j].sum().item() >= MIN_POSITIVES_TO_CALIBRATE else 1.0 for j in range(logits.shape[1])]
    return fit_temperature(logits, targets)


def calibrated(logits: torch.Tensor, temperature: float | list[float] | None) -> torch.Tensor:
    """The logits divided by the run's temperature(s); unchanged without one."""
    if temperature is None:
        return logits
    return logits / torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """Per non-empty equal-width bin of the scores: their mean, the share of them right, and how
    many they are. Classes: each text's top score, right when it is the true class. Label sets:
    every label's score, right when the label is present."""
    if targets.is_floating_point():
        confidence, hit = probs.reshape(-1).double(), targets.reshape(-1).double()
    else:
        top, predicted = probs.max(-1)
        confidence, hit = top.double(), (predicted == targets).double()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    return [(confidence[which == b].mean().item(), hit[which == b].mean().item(), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> float:
    """The gap between score and share right in each bin (`reliability_bins`), weighted by its count."""
    cells = reliability_bins(probs, targets, bins)
    total = sum(n for _, _, n in cells)
    return sum(n * abs(score - right) for score, right, n in cells) / total if total else float("nan")


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean squared error of the probabilities: over classes summed per text, or over every label."""
    if targets.is_floating_point():
        return (probs.double() - targets.double()).pow(2).mean().item()
    onehot = F.one_hot(targets, probs.shape[-1]).double()
    return (probs.double() - onehot).pow(2).sum(-1).mean().item()


def calibration_report(logits: torch.Tensor, targets: torch.Tensor, temperature, task: str) -> dict:
    """ECE and Brier score of a split's scores (classes or label sets) before and after the temperature."""
    scaled = calibrated(logits, temperature)
    before, after = probabilities(task, logits), probabilities(task, scaled)
    return {"temperature": temperature,
            "ece_before": expected_calibration_error(before, targets), "ece": expected_calibration_error(after, targets),
            "brier_before": brier_score(before, targets), "brier": brier_score(after, targets),
            "nll_before": nll(logits, targets, 1.0), "nll": nll(scaled, targets, 1.0)}
