"""A label set's decision thresholds, chosen on the validation split after training.

Three rules, from the one that fits nothing to the one that fits most:

  0.5        every label at 0.5 (a calibrated sigmoid's even odds)
  shared     one cut for every label, the one with the best micro-F1
  per-label  each label's own cut with its best F1 (0.5 for a label with too few positives)

A rule's F1 on the examples it was fitted on flatters it the more it fits: per-label cuts chosen on a
few hundred texts fit their noise (on Debian's tags, 300 validation programs: 0.81 micro-F1 where
they were chosen, 2.6 points *below* 0.5 on the test split). So the rule itself is chosen by
cross-fitting within the validation split: each rule is fitted on four fifths and scored (micro-F1)
on the fifth it did not see, five times. A rule that fits more replaces one that fits less only where
it scores better by more than one standard error of their difference, fold by fold (the
one-standard-error rule, as `tune` keeps its default recipe); the rule kept is then fitted on the
whole split. The test split is never read.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import lead_over
from .tasks import f1

RULES = ("0.5", "shared", "per-label")  # fewest fitted numbers first: a tie goes to the earlier
MIN_POSITIVES_FOR_THRESHOLD = 5  # fewer positives of a label than this: per-label keeps it at 0.5
CROSS_FIT_FOLDS = 5
MIN_TEXTS_TO_CHOOSE = 2 * CROSS_FIT_FOLDS  # fewer validation texts: every threshold stays 0.5, and said


def best_cut(p: np.ndarray, truth: np.ndarray) -> float:
    """The cut c, one of `p`'s values or 0.5, whose `p >= c` has the best F1 against `truth` (the
    lowest such cut on a tie). Sorted once, so a split of any size costs n log n."""
    order = np.argsort(-p, kind="stable")
    ranked, hits = p[order], truth[order].astype(np.float64)
    last_of_value = np.append(ranked[1:] != ranked[:-1], True)  # a cut keeps every tie of its value
    cuts, predicted, tp = ranked[last_of_value], np.flatnonzero(last_of_value) + 1.0, np.cumsum(hits)[last_of_value]
    positives = float(hits.sum())
    scores = 2 * tp / (positives + predicted)  # every cut predicts at least one
    at_half = f1(truth, p >= 0.5)
    cuts, scores = np.append(cuts, 0.5), np.append(scores, at_half)
    best = scores.max()
    return float(cuts[scores == best].min())


def fit_rule(rule: str, probs: np.ndarray, truth: np.ndarray, labels: list[str]) -> tuple[list[float], list[str]]:
    """`rule`'s thresholds fitted on these examples, and what it says of labels it could not fit."""
    if rule == "0.5":
        return [0.5] * len(labels), []
    if rule == "shared":
        return [best_cut(probs.ravel(), truth.ravel())] * len(labels), []
    thresholds, notes = [], []
    for j, label in enumerate(labels):
        if truth[:, j].sum() < MIN_POSITIVES_FOR_THRESHOLD:
            thresholds.append(0.5)
            notes.append(f"{label}: {int(truth[:, j].sum())} validation positives, threshold kept at 0.5")
        else:
            thresholds.append(best_cut(probs[:, j], truth[:, j]))
    return thresholds, notes


def cross_fitted_micro_f1(rule: str, probs: np.ndarray, truth: np.ndarray, labels: list[str]) -> list[float]:
    """`rule`'s micro-F1 on each fold of these examples when fitted on the other folds."""
    fold_of = np.empty(len(truth), dtype=np.int64)
    fold_of[np.random.default_rng(0).permutation(len(truth))] = np.arange(len(truth)) % CROSS_FIT_FOLDS
    scores = []
    for fold in range(CROSS_FIT_FOLDS):
        held = fold_of == fold
        thresholds, _ = fit_rule(rule, probs[~held], truth[~held], labels)
        scores.append(f1(truth[held].ravel(), (probs[held] >= np.asarray(thresholds)[None, :]).ravel()))
    return scores


def beats(scores: list[float], kept: list[float]) -> bool:
    """More than one standard error better, fold by fold."""
    lead, se = lead_over(scores, kept)
    return lead > se


def choose_thresholds(probs: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> tuple[list[float], list[str], dict]:
    """The thresholds of the rule cross-fitting prefers on these (validation) examples, notes to log,
    and the choice (`rule`, each rule's `cross_fitted_micro_f1` fold by fold) for metrics.json."""
    p, truth = probs.double().numpy(), targets.numpy() > 0.5
    if len(truth) < MIN_TEXTS_TO_CHOOSE:
        return [0.5] * len(labels), [f"{len(truth)} validation texts: thresholds kept at 0.5 "
                                     f"({MIN_TEXTS_TO_CHOOSE} are needed to choose them)"], {"rule": "0.5"}
    scores = {rule: cross_fitted_micro_f1(rule, p, truth, labels) for rule in RULES}
    rule = RULES[0]
    for fitted_more in RULES[1:]:
        if beats(scores[fitted_more], scores[rule]):
            rule = fitted_more
    thresholds, notes = fit_rule(rule, p, truth, labels)
    return thresholds, notes, {"rule": rule, "cross_fitted_micro_f1": scores}


def described(choice: dict) -> str:
    """The rule kept and, where they were compared, each rule's cross-fitted micro-F1 (mean ± its standard error)."""
    scores = choice.get("cross_fitted_micro_f1")
    if not scores:
        return choice["rule"]
    shown = ", ".join(f"{rule} {np.mean(s):.4f} ± {np.std(s, ddof=1) / np.sqrt(len(s)):.4f}" for rule, s in scores.items())
    return f"{choice['rule']} (cross-fitted validation micro-F1: {shown}; a rule that fits more must lead by a standard error)"
