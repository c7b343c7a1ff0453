"""Adapting more or less of the network and choosing the epoch: --trainable last-N-blocks,
--select-by and --early-stopping (the best epoch kept), --class-weight balanced."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gptclassify.classifier.head import first_trainable_block
from gptclassify.classifier.names import blocks_trained
from gptclassify.cli import main
from gptclassify.errors import UserError
from gptclassify.training.run import train_run
from gptclassify.training.prepare import prepare
from gptclassify.config import make_config
from gptclassify.training.steps import balanced_class_weights, calc_loss_batch, macro_f1


def quiet(*args, **kwargs):
    pass


def test_last_n_blocks_names():
    assert [blocks_trained(t) for t in ("head", "last-block", "last-2-blocks", "last-12-blocks")] == [0, 1, 2, 12]
    assert blocks_trained("last-0-blocks") is None and blocks_trained("last-x-blocks") is None
    assert first_trainable_block(12, "last-4-blocks") == 8 and first_trainable_block(12, "all") == -1
    with pytest.raises(UserError, match="--trainable must be one of"):
        make_config(None, trainable="last-two-blocks")


def test_last_n_blocks_trains_those_blocks_and_caches_the_rest(data_dir, weights_dir, tmp_path, capsys):
    from helpers import small_gpt2_dir

    weights = small_gpt2_dir(tmp_path, n_layer=4)
    lines = []
    trainer = prepare(None, str(weights), data_dir, make_config(None, epochs=1, max_steps=2,
                                                                  trainable="last-3-blocks"), tmp_path / "run",
                      log=lines.append)
    trained = {n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad and n.startswith("trf")}
    assert trained == {"1", "2", "3"} and trainer.classifier.start == 1 and trainer.inputs.cached
    assert any("embedding and 1 frozen block in" in line for line in lines)
    assert main(["train", "--data", str(data_dir), "--weights", str(weights_dir), "--out", str(tmp_path / "x"),
                 "--trainable", "last-3-blocks"]) == 1
    assert "the model has 2 blocks" in capsys.readouterr().err


def test_early_stopping_keeps_the_best_epoch(data_dir, weights_dir, tmp_path):
    lines = []
    cfg = make_config(None, epochs=8, lr=3e-2, select_by="accuracy", early_stopping=1, eval_freq=0)
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "stopped", log=lines.append)
    history = json.loads((tmp_path / "stopped" / "history.json").read_text())["epochs"]
    accuracies = [e["val_accuracy"] for e in history]
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i)) + 1  # the first epoch at the best
    assert len(history) == best + 1 < 8, accuracies  # stopped one epoch after the best
    assert any(line.startswith("early stopping: no better validation accuracy for 1 epoch(s)") for line in lines)
    assert f"kept the best epoch by validation accuracy: {best}" in lines
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] == pytest.approx(accuracies[best - 1], abs=1e-6)
    # the same run without early stopping walks the same path
    cfg = make_config(None, epochs=len(history), lr=3e-2, eval_freq=0)
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "straight", log=quiet)
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())["epochs"]
    assert [e["val_accuracy"] for e in straight] == accuracies


def test_select_by_macro_f1_logs_and_records_it(data_dir, weights_dir, tmp_path):
    lines = []
    cfg = make_config(None, epochs=2, max_steps=20, select_by="macro-f1")
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=lines.append)
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert all(0 <= e["val_macro_f1"] <= 1 for e in history)
    assert any(line.startswith("kept the best epoch by validation macro-f1:") for line in lines)
    assert (tmp_path / "run" / "checkpoint" / "best.safetensors").is_file()


def test_macro_f1_matches_the_report():
    from gptclassify.classifier.metrics import classification_report

    targets = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0, 2, 2])
    report = classification_report(targets.tolist(), predicted.tolist(), ["a", "b", "c"])
    assert macro_f1(predicted, targets, 3) == pytest.approx(report["macro_f1"])


def test_balanced_class_weights_and_the_weighted_loss():
    labels = [0] * 6 + [1] * 2
    w = balanced_class_weights(labels, 2)
    assert torch.allclose(w, torch.tensor([8 / (2 * 6), 8 / (2 * 2)]))  # scikit-learn's "balanced"
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-0.3, 0.9]])
    targets = torch.tensor([0, 1, 1])
    batch = (logits, targets, torch.ones(3, dtype=torch.long))
    got = calc_loss_batch(batch, lambda x, lengths: x, "cpu", weight=w)
    per_example = F.cross_entropy(logits, targets, reduction="none")
    assert got.item() == pytest.approx((w[targets] * per_example).sum().item() / 3)
    assert calc_loss_batch(batch, lambda x, lengths: x, "cpu").item() == pytest.approx(per_example.mean().item())
    with pytest.raises(UserError, match="a class has no training example"):
        balanced_class_weights([0, 0], 2)


def test_a_class_weighted_run(data_dir, weights_dir, tmp_path):
    lines = []
    train_run(None, str(weights_dir), data_dir, make_config(None, epochs=1, max_steps=3, class_weight="balanced"),
            tmp_path / "run", log=lines.append)
    said = next(line for line in lines if line.startswith("class weights (balanced):"))
    assert said == "class weights (balanced): ham 0.833, spam 1.250"  # 63 ham and 42 spam training messages
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["class_weight"] == "balanced"
    assert load_file(tmp_path / "run" / "model.safetensors")
