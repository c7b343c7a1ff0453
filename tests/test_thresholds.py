"""The label-set decision rule: each cut is the best F1 (against a brute-force search), and the rule
is chosen by cross-fitting on validation, preferring the one that fits less."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptclassify.classifier.tasks import f1
from gptclassify.classifier.thresholds import beats, best_cut, choose_thresholds, cross_fitted_micro_f1, fit_rule


def brute_force_cut(p, truth):
    candidates = np.unique(np.concatenate([p, [0.5]]))
    scores = [f1(truth, p >= c) for c in candidates]
    return float(candidates[int(np.argmax(scores))])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=40))
def test_best_cut_is_the_brute_force_searchs(rows):
    p = np.array([v / 20 for v, _ in rows])  # coarse values: many ties
    truth = np.array([t for _, t in rows])
    assert best_cut(p, truth) == brute_force_cut(p, truth)


def two_labels(positive_a, negative_a, positive_b, negative_b, n=200, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 2)) < 0.4
    noise = rng.normal(0, 0.01, (n, 2))
    probs = np.where(truth, [positive_a, positive_b], [negative_a, negative_b]) + noise
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32)


def test_labels_apart_at_even_odds_keep_0_5():
    probs, targets = two_labels(0.9, 0.1, 0.8, 0.2)
    thresholds, _, rule = choose_thresholds(probs, targets, ["a", "b"])
    assert rule["rule"] == "0.5" and thresholds == [0.5, 0.5]
    assert rule["cross_fitted_micro_f1"] == {"0.5": [1.0] * 5, "shared": [1.0] * 5, "per-label": [1.0] * 5}


def test_labels_apart_at_one_other_cut_share_it():
    probs, targets = two_labels(0.3, 0.1, 0.35, 0.15)
    thresholds, _, rule = choose_thresholds(probs, targets, ["a", "b"])
    assert rule["rule"] == "shared" and thresholds[0] == thresholds[1] and 0.15 < thresholds[0] <= 0.3
    assert rule["cross_fitted_micro_f1"]["0.5"] == [0.0] * 5


def test_labels_apart_at_their_own_cuts_get_them():
    probs, targets = two_labels(0.3, 0.1, 0.9, 0.7)
    thresholds, _, rule = choose_thresholds(probs, targets, ["a", "b"])
    assert rule["rule"] == "per-label" and 0.1 < thresholds[0] <= 0.3 and 0.7 < thresholds[1] <= 0.9
    assert min(rule["cross_fitted_micro_f1"]["per-label"]) > 0.9 > max(rule["cross_fitted_micro_f1"]["shared"])


def test_cross_fitting_scores_each_fold_by_cuts_fitted_without_it():
    """A rule that fits the noise of a few examples scores worse held out than where it was fitted."""
    rng = np.random.default_rng(1)
    probs = rng.random((40, 3))
    truth = rng.random((40, 3)) < 0.3  # unrelated to the scores: no cut generalizes
    fitted_in_sample = f1(truth.ravel(), (probs >= np.array([best_cut(probs[:, j], truth[:, j]) for j in range(3)])).ravel())
    assert np.mean(cross_fitted_micro_f1("per-label", probs, truth, ["a", "b", "c"])) < fitted_in_sample


def test_a_rule_that_fits_more_must_lead_by_a_standard_error():
    assert not beats([0.80, 0.70, 0.81, 0.69, 0.76], [0.75] * 5)  # a mean lead of 0.002, swung by 0.05
    assert beats([0.78, 0.77, 0.79, 0.78, 0.77], [0.75, 0.76, 0.75, 0.74, 0.76])


def test_too_few_validation_texts_keep_0_5_and_say_so():
    probs, targets = two_labels(0.3, 0.1, 0.9, 0.7, n=6)
    thresholds, notes, rule = choose_thresholds(probs, targets, ["a", "b"])
    assert thresholds == [0.5, 0.5] and rule == {"rule": "0.5"} and "6 validation texts" in notes[0]


def test_a_label_with_few_positives_keeps_0_5_under_per_label():
    probs, targets = two_labels(0.3, 0.1, 0.9, 0.7)
    targets[:, 1] = 0
    targets[:3, 1] = 1
    thresholds, notes = fit_rule("per-label", probs.double().numpy(), targets.numpy() > 0.5, ["a", "b"])
    assert thresholds[1] == 0.5 and notes == ["b: 3 validation positives, threshold kept at 0.5"]
