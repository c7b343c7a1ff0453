"""`gptclassify tune`: stratified folds of the training side only, successive halving, a killed tune
resumed to the same table, and the winner trained as a normal run that says it was tuned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from gptclassify.cli import main
from gptclassify.data.folds import stratified_folds
from gptclassify.config import TrainConfig
from gptclassify.training import trials, tune, tune_grid


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=4, max_size=200), k=st.integers(2, 6), seed=st.integers(0, 9))
def test_folds_cover_every_example_once_and_hold_each_class_evenly(labels, k, seed):
    folds = stratified_folds(labels, k, seed)
    assert sorted(i for f in folds for i in f) == list(range(len(labels)))
    for c in set(labels):  # each class split as evenly as it can be
        counts = [sum(labels[i] == c for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1, (c, counts)
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert folds == stratified_folds(labels, k, seed)


def test_numbers_and_label_sets_are_stratified_too():
    values = [float(i % 50) for i in range(200)]
    folds = stratified_folds(values, 5, 0)
    for f in folds:  # every fold spans the range
        assert min(values[i] for i in f) < 5 and max(values[i] for i in f) > 44
    sets = [[1, 0], [0, 1], [1, 1], [0, 0]] * 25
    counts = [Counter(tuple(sets[i]) for i in f) for f in stratified_folds(sets, 4, 0)]
    for labels in set(map(tuple, sets)):  # every set of labels spread evenly over the folds
        assert max(c[labels] for c in counts) - min(c[labels] for c in counts) <= 1


def test_successive_halving_keeps_the_better_half_and_two_to_the_end():
    assert tune_grid.planned_trainings(20, 5) == [20, 10, 5, 3, 2]
    assert tune_grid.planned_trainings(3, 3) == [3, 2, 2]
    assert tune_grid.planned_trainings(1, 3) == [1, 1, 1]
    assert tune_grid.parse_budget("30m") == 1800 and tune_grid.parse_budget("1.5h") == 5400 and tune_grid.parse_budget("20") == 1200


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from helpers import sms_slice_dir

    return sms_slice_dir(tmp_path_factory.mktemp("tune"), 90, 60)


def test_the_test_split_never_changes_the_choice(small_data, weights_dir, tmp_path, monkeypatch):
    """Two data directories that differ only in their test split's labels tune to the same table."""
    import pandas as pd

    monkeypatch.setattr(tune_grid, "RATE_FACTORS", (1.0, 4.0))
    monkeypatch.setattr(tune_grid, "EPOCHS", (2,))
    monkeypatch.setattr(tune_grid, "LORA_FACTORS", (4.0,))
    flipped = shutil.copytree(small_data, tmp_path / "flipped")
    test = pd.read_csv(flipped / "test.csv", keep_default_na=False, dtype=str)
    test["label"] = ["ham" if y == "spam" else "spam" for y in test["label"]]
    test.to_csv(flipped / "test.csv", index=False)
    tables = []
    for name, data in (("a", small_data), ("b", flipped)):
        base = TrainConfig(prefix_dtype="float32")
        tune.tune_run(None, str(weights_dir), data, base, tmp_path / name, folds=2, log=lambda *a: None)
        tables.append(json.loads((tmp_path / name / "tuning.json").read_text())["recipes"])
    assert tables[0] == tables[1] and len(tables[0]) == 7  # the last block on both schedules, the last 2, LoRA
    assert {(r["trainable"], r["schedule"]) for r in tables[0]} == {
        ("last-block", "constant"), ("last-block", "cosine"), ("last-2-blocks", "constant"), ("lora", "constant")}
    # 7 recipes on fold 1; on fold 2 the better 4 and the default (the grid's first), whatever its rank
    grid = tune_grid.make_grid(5e-5, "constant", ("last-block", "last-2-blocks", "lora"))
    first = sorted(grid, key=lambda r: -next(row["scores"][0] for row in tables[0] if row["recipe"] == r.name))
    assert {r["recipe"] for r in tables[0] if r["folds"] == 2} == {r.name for r in first[:4]} | {grid[0].name}
    assert "lora" in {r["trainable"] for r in tables[0]}  # LoRA (on the last 2 blocks) is in the grid
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    tuning = json.loads((tmp_path / "a" / "tuning.json").read_text())
    assert tuning["against_default"]["best"] == tables[0][0]["recipe"] and tuning["against_default"]["default"] == grid[0].name
    assert tuning["per_fold"] == [7, 5]  # no budget: successive halving alone
    assert config["tuning"]["winner"] == tuning["winner"] in (tables[0][0]["recipe"], grid[0].name)
    assert config["tuning"]["folds"] == 2
    # its temperature: fitted on the winner's 120 out-of-fold scores, not on the 15 validation texts
    assert config["tuning"]["temperature_fitted_on"].startswith("the winner's out-of-fold scores (120 texts")
    assert config["training"]["trainable"] == tables[0][0]["trainable"]
    # the winner trained on the training and validation splits (105 + 15 texts), batch after batch of
    # both; those splits' held-out scores are its out-of-fold ones, and no epoch was held out to pick
    assert config["tuning"]["trained_on"] == "the training and validation splits"
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    batch = config["training"]["batch_size"]
    assert metrics["training"]["steps"] == config["training"]["epochs"] * -(-120 // batch)
    assert metrics["training"]["examples_seen"] == config["training"]["epochs"] * 120
    assert metrics["validation"]["scored"].startswith("out of fold")
    assert sum(c["support"] for c in metrics["validation"]["per_class"].values()) == 120
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert history["epochs"] and all("val_accuracy" not in e for e in history["epochs"])
    assert all("val_loss" not in e and "train_loss" in e for e in history["eval"])
    # its report: the tuning table, what it trained on, a baseline trained on the same texts
    logged = []
    from gptclassify.inference.report import gather

    got = gather(tmp_path / "a", None, "test", "cpu", log=logged.append)
    assert "report: the TF-IDF baseline on the same training data (train and validation splits)" in logged
    assert got.baseline["accuracy"] is not None
    assert main(["report", str(tmp_path / "a")]) == 0
    page = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "id=tuning" in page and "the training and validation splits" in page
    assert not (tmp_path / "a" / ".tuning").exists() and not (tmp_path / "a" / "tuning.partial.json").exists()


def test_a_killed_tune_resumes_to_the_same_table(small_data, weights_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["tune", "--data", str(small_data), "--weights", str(weights_dir), "--folds", "2", "--budget", "1s",
            "--prefix-dtype", "float32"]  # a budget of a second: the grid's two likeliest recipes
    straight = subprocess.run([sys.executable, "-m", "gptclassify.cli", *args, "--out", str(tmp_path / "straight")],
                              env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = subprocess.run([sys.executable, "-m", "gptclassify.cli", *args, "--out", str(tmp_path / "resumed")],
                            env={**env, "GPTCLASSIFY_FAILPOINT": "tune-trial:3"}, capture_output=True, text=True)
    assert killed.returncode == -9
    partial = json.loads((tmp_path / "resumed" / "tuning.partial.json").read_text())
    assert len(partial["scores"]) == 3
    again = subprocess.run([sys.executable, "-m", "gptclassify.cli", *args, "--out", str(tmp_path / "resumed")],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 finished scores read back" in again.stdout + again.stderr
    a, b = (json.loads((tmp_path / r / "tuning.json").read_text()) for r in ("straight", "resumed"))
    assert a["recipes"] == b["recipes"] and a["winner"] == b["winner"] and a["grid"] == 2


def test_a_tune_killed_in_its_winners_training_is_finished_by_tune_not_train(small_data, weights_dir, tmp_path,
                                                                             capsys):
    """The winner trains on the training and validation splits, which `train --resume` would not
    give it: it says to run the tune again, and the tune again finishes the run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gptclassify.cli", "tune", "--data", str(small_data), "--weights", str(weights_dir),
            "--folds", "2", "--budget", "1s", "--prefix-dtype", "float32", "--out", str(out)]
    killed = subprocess.run(args, env={**env, "GPTCLASSIFY_FAILPOINT": "step:20"}, capture_output=True, text=True)
    assert killed.returncode == -9 and (out / "tuning.partial.json").is_file() and (out / "checkpoint").is_dir()
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 1
    assert "was training its winner here when it stopped; run the same tune command again" in capsys.readouterr().err
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished scores read back" in again.stdout + again.stderr
    assert json.loads((out / "config.json").read_text())["tuning"]["trained_on"] == "the training and validation splits"
    assert not (out / "tuning.partial.json").exists()


def test_tune_refuses_what_it_chooses_itself(small_data, weights_dir, tmp_path, capsys):
    for extra, message in ((["--trainable", "last-block"], "tune chooses --trainable itself"),
                           (["--budget", "soon"], "--budget 'soon': a time such as 30m"),
                           (["--folds", "1"], "--folds must be 2 or more"),
                           (["--keep-best"], "--keep-best needs a validation split held out"),
                           (["--epochs", "3", "--lr-schedule", "constant"],
                            "tune chooses --epochs and --lr-schedule itself; leave them out"),
                           (["--early-stopping", "2"], "--early-stopping needs a validation split held out: leave it")):
        capsys.readouterr()
        assert main(["tune", "--data", str(small_data), "--weights", str(weights_dir), "--out", str(tmp_path / "r"),
                     *extra]) == 1
        assert message in capsys.readouterr().err


def test_torchrun_shares_the_trials_out_to_the_same_table(small_data, weights_dir, tmp_path, monkeypatch):
    """Two processes under torchrun take turns at each fold's trials; the table, the winner and the
    tuned run are a single process's."""
    from test_distributed import run_ok

    monkeypatch.setenv("TMPDIR", str(tmp_path / "torchrun-tmp"))  # torchrun's agent leaves a folder there
    (tmp_path / "torchrun-tmp").mkdir()
    args = ["tune", "--data", small_data, "--weights", weights_dir, "--folds", "2", "--budget", "0.01s",
            "--prefix-dtype", "float32"]  # a budget no timing fits: the grid's two likeliest recipes, on any machine
    out = run_ok(*args, "--out", tmp_path / "two")
    assert "shared by 2 processes" in out
    assert main([*map(str, args), "--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / r / "tuning.json").read_text()) for r in ("one", "two"))
    assert [(r["recipe"], r["folds"]) for r in one["recipes"]] == [(r["recipe"], r["folds"]) for r in two["recipes"]]
    assert [x for r in one["recipes"] for x in r["scores"]] == \
        pytest.approx([x for r in two["recipes"] for x in r["scores"]], abs=1e-9)
    assert one["winner"] == two["winner"] and one["scores"] == two["scores"] == one["trainings"] == 4
    # the winner, trained on both splits shared out over the two processes: the single process's run
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m1["training"]["steps"] == m2["training"]["steps"] and m1["training"]["examples_seen"] == \
        m2["training"]["examples_seen"] == m1["training"]["epochs"] * 120
    assert m1["test"]["loss"] == pytest.approx(m2["test"]["loss"], rel=1e-4)
    assert not (tmp_path / "two" / ".tuning").exists() and not (tmp_path / "two" / "tuning.partial.json").exists()


def test_a_lora_winner_is_trained_as_lora_on_the_last_two_blocks(small_data, weights_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_grid, "RATE_FACTORS", ())  # LoRA's recipes alone: one of them wins
    monkeypatch.setattr(tune_grid, "EPOCHS", (2,))
    tune.tune_run(None, str(weights_dir), small_data, TrainConfig(prefix_dtype="float32"), tmp_path / "run",
                  folds=2, log=lambda *a: None)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["trainable"] == "lora" and config["training"]["lora_blocks"] == 2
    assert config["tuning"]["winner"].startswith("lora, ") and (tmp_path / "run" / "adapter.safetensors").is_file()


@pytest.fixture(scope="module")
def depths(small_data, weights_dir, tmp_path_factory):
    """Every depth prepared as `tune` prepares them, with the folds' data."""
    from torch.utils.data import ConcatDataset

    prepared = tune.prepare_depths(None, str(weights_dir), small_data, TrainConfig(prefix_dtype="float32"),
                                   tmp_path_factory.mktemp("depths"), lambda *a: None)
    data = {d: ConcatDataset([p.inputs.sets["train"], p.inputs.sets["validation"]]) for d, p in prepared.items()}
    starts = {d: {n: q.detach().clone() for n, q in p.model.named_parameters() if q.requires_grad}
              for d, p in prepared.items()}
    first = next(iter(prepared.values()))
    folds = stratified_folds(first.texts["train"][1] + first.texts["validation"][1], 2, 0)
    return prepared, data, starts, folds


def logit_sum(p, logits, targets):
    """A held-out 'score' that any change of the trained weights moves (the accuracy of a few texts would not)."""
    return float(logits.double().sum())


def test_one_training_at_a_constant_rate_scores_its_shorter_recipes_exactly(depths, monkeypatch):
    prepared, data, starts, (held, rest) = depths
    monkeypatch.setattr(trials, "held_out_score", logit_sum)
    p = prepared["last-block"]
    worker = trials.make_workers(prepared, 1)[0]
    short, long = (tune_grid.Recipe("last-block", 1e-3, "constant", e) for e in (2, 4))
    assert tune_grid.trainings([long, short]) == [[long, short]]
    together = trials.trial(p, worker, starts["last-block"], data["last-block"], rest, held, [long, short])
    alone = trials.trial(p, worker, starts["last-block"], data["last-block"], rest, held, [short])
    assert together[short.name][0] == alone[short.name][0] and together[long.name][0] != alone[short.name][0]
    cosine = [tune_grid.Recipe("last-block", 1e-3, "cosine", e) for e in (2, 4)]
    assert tune_grid.trainings(cosine) == [[cosine[0]], [cosine[1]]]  # a decaying rate: each its own training


def test_the_trials_models_keep_only_what_they_train_from_the_cached_states(depths, monkeypatch, small_data,
                                                                            weights_dir, tmp_path):
    prepared, data, starts, (held, rest) = depths
    monkeypatch.setattr(trials, "held_out_score", logit_sum)
    for depth, p in prepared.items():
        start = p.classifier.start
        assert p.model.tok_emb.weight.numel() == 0 and all(
            q.numel() == 0 for block in p.model.trf_blocks[:start] for q in block.parameters())
        assert all(q.numel() > 0 for q in p.model.trf_blocks[start:].parameters()), depth
    # a released model trains to the very scores of one that kept everything
    full = tune.prepare(None, str(weights_dir), small_data, TrainConfig(prefix_dtype="float32"), tmp_path / "full",
                        lambda *a: None)
    assert full.classifier.start == prepared["last-block"].classifier.start and full.model.tok_emb.weight.numel()
    recipe = [tune_grid.Recipe("last-block", 2e-3, "cosine", 2)]
    worker = trials.make_workers(prepared, 1)[0]
    released = trials.trial(prepared["last-block"], worker, starts["last-block"], data["last-block"], rest, held, recipe)
    whole_worker = trials.Worker({"last-block": full.model}, {"last-block": full.logits_fn})
    whole = trials.trial(full, whole_worker, starts["last-block"], data["last-block"], rest, held, recipe)
    assert released[recipe[0].name][0] == whole[recipe[0].name][0]


def test_class_weight_balanced_weighs_each_folds_own_classes(depths, monkeypatch):
    import dataclasses

    import torch

    from gptclassify.training import steps

    prepared, data, starts, (held, rest) = depths
    monkeypatch.setattr(trials, "held_out_score", logit_sum)
    p = prepared["last-block"]
    targets = p.texts["train"][1] + p.texts["validation"][1]
    first_class = [i for i in rest if targets[i] == 0]
    lopsided = first_class + [i for i in rest if targets[i] != 0][:len(first_class) // 3]  # 3 to 1
    weighed = dataclasses.replace(p, classifier=dataclasses.replace(
        p.classifier, cfg=dataclasses.replace(p.cfg, class_weight="balanced")))
    seen = []
    real = steps.calc_loss_batch
    monkeypatch.setattr(trials, "calc_loss_batch", lambda *a, **k: seen.append(k["weight"]) or real(*a, **k))
    worker, recipe = trials.make_workers(prepared, 1)[0], [tune_grid.Recipe("last-block", 2e-3, "cosine", 2)]
    plain = trials.trial(p, worker, starts["last-block"], data["last-block"], lopsided, held, recipe)
    balanced = trials.trial(weighed, worker, starts["last-block"], data["last-block"], lopsided, held, recipe)
    expected = steps.balanced_class_weights([targets[i] for i in lopsided], len(p.labels))
    assert seen[0] is None and torch.equal(seen[-1], expected) and expected[0] < 1 < expected[1]
    assert plain[recipe[0].name][0] != balanced[recipe[0].name][0]


def test_workers_share_the_frozen_weights_and_train_to_the_same_scores(depths, monkeypatch):
    prepared, data, starts, (held, rest) = depths
    monkeypatch.setattr(trials, "held_out_score", logit_sum)
    workers = trials.make_workers(prepared, 2)
    for depth, p in prepared.items():
        mine, theirs = dict(p.model.named_parameters()), dict(workers[1].models[depth].named_parameters())
        assert mine.keys() == theirs.keys()
        for name, q in mine.items():
            assert (q.data_ptr() == theirs[name].data_ptr()) == (not q.requires_grad), name
        recipe = [tune_grid.Recipe(depth, 2e-3, "cosine", 2)]
        scores = [trials.trial(p, w, starts[depth], data[depth], rest, held, recipe)[recipe[0].name][0] for w in workers]
        assert scores[0] == scores[1]
    # side by side on one thread each: the same scores, and a thread started after them (a server's
    # worker) computes with the process's threads again, not the trials' one
    import threading

    import torch

    recipes = [[tune_grid.Recipe("last-block", r, "cosine", 2)] for r in (1e-3, 2e-3)]
    with trials.threads_each(1):  # one after another, on one thread as each is side by side
        alone = [trials.trial(prepared["last-block"], workers[0], starts["last-block"], data["last-block"], rest, held,
                              r) for r in recipes]
    both = trials.run_side_by_side(recipes, prepared, workers, 1, starts, data, rest, held, None, 0)
    assert [both[f"{r[0].name}|0"][0] for r in recipes] == [a[r[0].name][0] for a, r in zip(alone, recipes)]
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [torch.get_num_threads()]


def test_the_budget_keeps_what_fits_in_the_grids_order():
    grid = tune_grid.make_grid(1e-3, "cosine", tune_grid.DEPTHS)
    assert len(grid) == 42 and grid[0] == tune_grid.Recipe("last-block", 1e-3, "cosine", 5)
    assert grid[1] == tune_grid.Recipe("last-block", 1e-3, "constant", 5) and grid[-1].trainable == "lora"
    costs = tune_grid.Costs({"last-block": 0.01, "last-2-blocks": 0.05, "last-4-blocks": 0.08, "lora": 0.04}, 100,
                            120, 1)
    whole = costs.whole(grid, 5)
    kept = {f: tune_grid.sized_to(grid, whole * f, 5, costs) for f in (0.0, 0.1, 0.2, 0.6, 1.0)}
    assert len(kept[0.0]) == 2 and kept[1.0] == grid
    for f, k in kept.items():
        assert [r for r in grid if r in k] == k  # in the grid's order
        if len(k) > 2:
            assert costs.whole(k, 5) <= whole * f
            # the first fold and the dearest finalists on the others fit, whatever wins
            assert costs.at_worst(k, k[0], 5, least=True) <= costs.whole(k, 5)
    assert len(kept[0.1]) < len(kept[0.6]) < len(grid)
    # a tight budget leaves out the dear recipes of the last 2 blocks, and keeps cheaper ones after them
    tight = kept[0.2]
    assert any(r.trainable == "last-2-blocks" for r in grid[:grid.index(tight[-1])] if r not in tight)
    # at a constant rate, the 3-epoch twin of a 5-epoch recipe costs nothing more
    pair = [tune_grid.Recipe("last-block", 1e-3, "constant", e) for e in (5, 3)]
    assert costs.cross_validation(pair, 5) == costs.cross_validation(pair[:1], 5)


def test_the_recipes_going_on_are_cut_to_the_time_left_the_worst_first():
    costs = tune_grid.Costs({"last-block": 0.01, "last-2-blocks": 0.05}, 100, 120, 1)
    default = tune_grid.Recipe("last-block", 1e-3, "cosine", 5)
    ranked = [tune_grid.Recipe("last-2-blocks", 2e-3, "cosine", 5), tune_grid.Recipe("last-block", 2e-3, "cosine", 3),
              tune_grid.Recipe("last-block", 5e-4, "cosine", 5), default]  # the best first, the default last
    need = costs.folds(costs.halving(ranked, default, 3)) + costs.final(ranked)
    assert costs.at_worst(ranked, default, 3) == need
    assert tune_grid.fit_to_time(ranked, default, 3, None, costs) == ranked
    assert tune_grid.fit_to_time(ranked, default, 3, need, costs) == ranked
    fewer = tune_grid.fit_to_time(ranked, default, 3, need * 0.9, costs)
    assert fewer == ranked[:2] + [default] or fewer == ranked[:1] + [default]
    assert costs.at_worst(fewer, default, 3) <= need * 0.9
    assert tune_grid.fit_to_time(ranked, default, 3, 0.0, costs) == [ranked[0], default]  # never fewer than two


def test_what_goes_on_to_each_fold_is_recorded_and_a_resumed_tune_keeps_it(tmp_path):
    grid = [tune_grid.Recipe("last-block", lr, "cosine", 5) for lr in (1e-3, 2e-3, 4e-3, 5e-4)]
    means = {r.name: m for r, m in zip(grid, (0.1, 0.9, 0.8, 0.7))}
    scores, partial, decided, logged = {}, tmp_path / "partial.json", {}, []
    record = tune.recorder(scores, partial, {"key": 1, "alive": decided}, tmp_path / "held-out", True)
    kept = tune.going_on(grid, means, grid, 1, 3, lambda alive, folds: [alive[0], alive[-1]], decided, record,
                         logged.append)
    assert kept == [grid[1], grid[0]]  # halving kept 2 and the default; the cut, the best and the default
    assert logged == ["tune: 2 recipes go on to fold 2, not 3: the rest would pass the budget"]
    saved = json.loads(partial.read_text())
    assert saved["alive"] == {"1": [grid[1].name, grid[0].name]} and saved["scores"] == {}
    resumed = tune.going_on(grid, means, grid, 1, 3, lambda alive, folds: alive, saved["alive"], record, logged.append)
    assert resumed == kept  # what the killed tune decided, whatever the time left now
    assert tune.going_on(grid, means, grid, 1, 3, None, {}, record, logged.append) == [grid[1], grid[2], grid[0]]


def test_a_lead_within_one_standard_error_keeps_the_default():
    default, other = (tune_grid.Recipe("last-block", lr, "cosine", 5) for lr in (1e-3, 2e-3))
    base = [0.90, 0.80, 0.85, 0.88, 0.83]
    clear = tune_grid.choose(other, default, [b + 0.02 for b in base], base)  # better by 2 points on every fold
    assert clear["winner"] == other and clear["lead"] == pytest.approx(0.02) and clear["lead_se"] == pytest.approx(0, abs=1e-9)
    noisy = tune_grid.choose(other, default, [b + d for b, d in zip(base, (0.06, -0.04, 0.05, -0.03, 0.0))], base)
    assert noisy["lead"] == pytest.approx(0.008) and noisy["lead_se"] > noisy["lead"] and noisy["winner"] == default
    assert tune_grid.choose(default, default, base, base)["winner"] == default


def test_successive_halving_keeps_the_default_to_the_last_fold():
    grid = [tune_grid.Recipe("last-block", lr, "cosine", 5) for lr in (1e-3, 2e-3, 4e-3, 5e-4)]
    means = {r.name: m for r, m in zip(grid, (0.1, 0.9, 0.8, 0.7))}
    assert tune_grid.survivors(grid, means, 2, grid[0]) == [grid[1], grid[2], grid[0]]
    assert tune_grid.survivors(grid[1:], means, 2, grid[0]) == [grid[1], grid[2]]
    means[grid[0].name] = 1.0
    assert tune_grid.survivors(grid, means, 2, grid[0]) == [grid[0], grid[1]]


def test_the_out_of_fold_scores_are_the_winners_on_every_fold_in_order(tmp_path):
    import torch

    scores, partial, held = {}, tmp_path / "partial.json", tmp_path / "held-out"
    record = tune.recorder(scores, partial, {"key": 1}, held, True)
    winner, other = tune_grid.Recipe("last-block", 1e-3, "cosine", 5), tune_grid.Recipe("last-block", 2e-3, "cosine", 5)
    folds = [(torch.randn(3, 2), torch.tensor([0, 1, 1])), (torch.randn(2, 2), torch.tensor([1, 0]))]
    record({f"{winner.name}|1": (0.5, *folds[1]), f"{other.name}|0": (0.7, torch.zeros(3, 2), torch.zeros(3))})
    assert tune.out_of_fold(held, winner, 2) is None  # fold 0's are not there yet
    record({f"{winner.name}|0": (1.0, *folds[0])})
    logits, targets = tune.out_of_fold(held, winner, 2)
    assert torch.equal(logits, torch.cat([folds[0][0], folds[1][0]])) and targets.tolist() == [0, 1, 1, 1, 0]
    assert json.loads(partial.read_text())["scores"] == {f"{winner.name}|1": 0.5, f"{other.name}|0": 0.7,
                                                        f"{winner.name}|0": 1.0}
