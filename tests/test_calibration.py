"""Calibrated scores: the temperature fitted on the validation split, what it changes (the scores)
and what it never changes (the labels), its report in metrics.json, and abstaining (`--min-score`)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gptclassify.classifier.calibration import (brier_score, calibrated, expected_calibration_error,
                                                fit_temperature, fit_temperatures, nll)
from gptclassify.cli import main


def overconfident(n=2000, k=3, factor=3.0, seed=0):
    """Logits `factor` times too large: the labels are drawn from softmax(z), the model says z * factor."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return z * factor, y


def test_the_temperature_is_the_one_a_direct_search_finds_and_undoes_overconfidence():
    logits, y = overconfident()
    t = fit_temperature(logits, y)
    grid = [math.exp(-3 + 6 * i / 20000) for i in range(20001)]  # 0.05 to 20, every 0.03%
    best = min(grid, key=lambda g: nll(logits, y, g))
    assert nll(logits, y, t) <= nll(logits, y, best) + 1e-9
    assert abs(t - best) / best < 1e-3 and 2.5 < t < 3.5
    before = expected_calibration_error(torch.softmax(logits, -1), y)
    after = expected_calibration_error(torch.softmax(calibrated(logits, t), -1), y)
    assert after < before / 2
    assert brier_score(torch.softmax(calibrated(logits, t), -1), y) < brier_score(torch.softmax(logits, -1), y)


def test_multi_label_fits_one_temperature_per_label_and_leaves_rare_labels_alone():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 3, generator=g)
    y = (torch.rand(500, 3, generator=g) < torch.sigmoid(z)).float()
    y[:, 2] = 0
    y[:3, 2] = 1  # 3 positives: too few to fit
    temps = fit_temperatures(z * torch.tensor([2.0, 0.5, 4.0]), y, "multi-label")
    assert 1.6 < temps[0] < 2.5 and 0.35 < temps[1] < 0.65 and temps[2] == 1.0
    assert fit_temperatures(z, y[:10], "multi-label") is None  # too few texts
    assert fit_temperatures(z[:, :1], y[:, :1], "regression") is None


def test_the_calibration_error_is_the_binned_gap_between_confidence_and_accuracy():
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    y = torch.tensor([0, 1, 0, 1])
    # bins: 0.95 twice (right once: gap 0.45), 0.6 (right: 0.4), 0.7 (right: 0.3)
    assert expected_calibration_error(probs, y) == pytest.approx((2 * 0.45 + 0.4 + 0.3) / 4)
    assert brier_score(probs, y) == pytest.approx(((0.05 ** 2 * 2) + (0.95 ** 2 * 2) + 0.4 ** 2 * 2 + 0.3 ** 2 * 2) / 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory, weights_dir):
    from helpers import sms_slice_dir

    tmp = tmp_path_factory.mktemp("cal")
    data = sms_slice_dir(tmp, 150, 100)
    out = tmp / "run"
    assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(out), "--epochs", "3",
                 "--lr", "3e-3", "--prefix-dtype", "float32"]) == 0
    return out, data


def test_a_run_keeps_its_temperature_scores_with_it_and_never_changes_a_label(run):
    from gptclassify.classifier.prefix import run_logits
    from gptclassify.data.batches import Collate
    from gptclassify.data.splits import load_data_split
    from gptclassify.inference.evaluate import evaluate_run
    from gptclassify.inference.predict import Classifier

    out, data = run
    config = json.loads((out / "config.json").read_text())
    t = config["temperature"]
    assert isinstance(t, float) and t > 0
    clf = Classifier.load(out, "cpu")
    texts, targets = load_data_split(data, "validation", clf.labels)
    ids, _, lengths = Collate(clf.tokenizer.pad_id)([(clf.encode(x), 0) for x in texts])
    with torch.no_grad():
        logits = run_logits(clf.model, clf.prefix, ids, lengths, clf.pooling).float()
    assert nll(logits, torch.tensor(targets), t) <= min(nll(logits, torch.tensor(targets), t * f)
                                                        for f in (0.97, 0.99, 1.01, 1.03)) + 1e-9
    probs = clf.probabilities(texts)
    assert torch.allclose(probs, torch.softmax(logits / t, -1), atol=1e-5)
    assert probs.argmax(-1).tolist() == logits.argmax(-1).tolist()
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        cal = metrics[split]["calibration"]
        assert cal["temperature"] == t and {"ece_before", "ece", "brier_before", "brier", "nll_before", "nll"} <= set(cal)
    assert metrics["validation"]["calibration"]["ece"] <= metrics["validation"]["calibration"]["ece_before"] + 1e-9
    validation = metrics["validation"]["calibration"]  # T minimizes it, and T = 1 was a candidate
    assert validation["nll"] == pytest.approx(nll(logits / t, torch.tensor(targets), 1.0), abs=1e-5)
    assert validation["nll"] <= validation["nll_before"] + 1e-9
    again = evaluate_run(out, data, "test", "cpu")
    assert again["calibration"] == pytest.approx(metrics["test"]["calibration"])
    assert F.cross_entropy(logits, torch.tensor(targets)).item() == pytest.approx(metrics["validation"]["loss"], abs=1e-5)


def test_min_score_withholds_exactly_the_labels_under_it(run, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from gptclassify.inference.predict import Classifier
    from gptclassify.inference.serve import create_app

    out, _ = run
    clf = Classifier.load(out, "cpu")
    texts = [f"message {i}: call now to win" if i % 3 else f"see you at {i}" for i in range(40)]
    plain = clf.predict(texts)
    cut = sorted(p["score"] for p in plain)[len(plain) // 2]
    unsure = clf.predict(texts, min_score=cut)
    assert [u["label"] for u in unsure] == [p["label"] if p["score"] >= cut else None for p in plain]
    assert 0 < sum(u["label"] is None for u in unsure) < len(texts)
    assert [u["score"] for u in unsure] == [p["score"] for p in plain]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    capsys.readouterr()
    assert main(["predict", str(out), "--input", str(src), "--min-score", str(cut), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in lines] == [u["label"] for u in unsure]
    assert main(["predict", str(out), "hello", "--min-score", "1.5"]) == 1
    assert "--min-score is a probability, 0 to 1" in capsys.readouterr().err
    with TestClient(create_app(clf, out)) as client:
        answer = client.post("/v1/classify", json={"texts": texts, "min_score": cut})
        assert answer.status_code == 200
        assert [p["label"] for p in answer.json()["predictions"]] == [u["label"] for u in unsure]
        assert client.post("/v1/classify", json={"texts": texts, "min_score": 2.0}).status_code == 422
        assert client.post("/v1/classify", json={"texts": texts, "min_score": 1}).status_code == 200
