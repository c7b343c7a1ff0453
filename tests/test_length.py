"""The length policy: which tokens of a long text are kept (head, tail, head+tail), what the log
says is cut before the frozen pass, and predictions that cut as the run was trained."""

from __future__ import annotations

import json

import pytest

from gptclassify import Classifier
from gptclassify.data.batches import TextDataset
from gptclassify.cli import main
from gptclassify.inference.evaluate import evaluate_run
from gptclassify.training.run import train_run
from gptclassify.data.tokenizer import keep
from gptclassify.config import make_config


def test_keep_takes_the_start_the_end_or_both():
    ids = list(range(10))
    assert keep(ids, 4, "head") == [0, 1, 2, 3]
    assert keep(ids, 4, "tail") == [6, 7, 8, 9]
    assert keep(ids, 4, "head+tail") == [0, 1, 8, 9]
    assert keep(ids, 5, "head+tail") == [0, 1, 2, 8, 9]
    assert keep(ids, 1, "head+tail") == [0]
    assert keep(ids, 10, "tail") == ids and keep(ids, 12, "head+tail") == ids


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_a_10_mb_text_keeps_the_right_ends(tokenizer, truncation):
    huge = "START of a very long document. " + "filler words in the middle " * 400_000 + "and its END."
    got = keep(tokenizer.encode(huge, 64, truncation), 64, truncation)
    full_start, full_end = tokenizer.encode(huge[:5000]), tokenizer.encode(huge[-5000:])
    expected = {"head": full_start[:64], "tail": full_end[-64:], "head+tail": full_start[:32] + full_end[-32:]}
    assert got == expected[truncation]


def test_the_dataset_counts_what_it_cuts(tokenizer):
    texts = ["one two three four five six seven eight", "short", "a b c d e f g h i j"]
    lengths = [len(tokenizer.encode(t)) for t in texts]
    ds = TextDataset(texts, [0, 1, 0], tokenizer, max_length=5, truncation="tail")
    assert ds.cut == sum(n > 5 for n in lengths) == 2
    assert ds.dropped == sum(max(0, n - 5) for n in lengths)
    assert ds.encoded[0] == tokenizer.encode(texts[0])[-5:]


@pytest.mark.parametrize("truncation", ["tail", "head+tail"])
def test_a_run_trained_with_a_policy_predicts_and_evaluates_with_it(truncation, data_dir, weights_dir, tmp_path, sms):
    lines = []
    cfg = make_config(None, epochs=1, max_steps=4, max_length=12, truncation=truncation)
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=lines.append)
    said = next(line for line in lines if line.startswith("length:"))
    assert said.startswith(f"length: 12 tokens (--max-length); {truncation} truncation cuts train ")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["truncation"] == truncation and config["max_length"] == 12
    clf = Classifier.load(tmp_path / "run", "cpu")
    long = next(t for t in sms if len(clf.tokenizer.encode(t)) > 30)
    assert clf.encode(long) == keep(clf.tokenizer.encode(long), 12, truncation)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    evaluated = evaluate_run(tmp_path / "run", data_dir, "test")
    assert evaluated["confusion_matrix"] == metrics["confusion_matrix"]


def test_the_default_keeps_head_and_tail_and_the_book_preset_keeps_the_head():
    assert make_config(None).truncation == "head+tail"  # chosen by cross-validation (benchmarks/recipe_cv.py)
    assert make_config("book").truncation == "head"  # the book's `encoded_text[:max_length]`
    assert make_config("book", truncation="tail").truncation == "tail"


def test_a_run_from_before_truncation_policies_still_predicts_with_the_head(data_dir, weights_dir, tmp_path, sms):
    cfg = make_config(None, epochs=1, max_steps=2, max_length=12, truncation="head")
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=lambda _: None)
    config_file = tmp_path / "run" / "config.json"
    config = json.loads(config_file.read_text())
    del config["truncation"]  # what runs of earlier versions wrote
    config_file.write_text(json.dumps(config))
    clf = Classifier.load(tmp_path / "run", "cpu")
    long = next(t for t in sms if len(clf.tokenizer.encode(t)) > 30)
    assert clf.encode(long) == clf.tokenizer.encode(long)[:12]


def test_the_frozen_pass_says_its_cost_first(data_dir, weights_dir, tmp_path, capsys):
    assert main(["train", "--data", str(data_dir), "--weights", str(weights_dir), "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    cost = next(line for line in out.splitlines() if line.startswith("frozen pass:"))
    assert "token positions through the embedding and 1 frozen block in " in cost and " (train " in cost
    assert "GB on disk in " in cost and "(reusable)" in cost
    assert out.index("frozen pass:") < out.index("feature cache:")


def test_without_max_length_long_texts_are_cut_at_the_default_cap(data_dir, weights_dir, tmp_path, monkeypatch):
    """The book's rule (the longest training text) until it passes the default cap; the cap then."""
    import gptclassify.training.prepare as run_module

    monkeypatch.setattr(run_module, "DEFAULT_MAX_LENGTH", 24)
    lines = []
    train_run(None, str(weights_dir), data_dir, make_config(None, epochs=1, max_steps=2), tmp_path / "run",
            log=lines.append)
    said = next(line for line in lines if line.startswith("length:"))
    assert said.startswith("length: 24 tokens (the default cap of 24 tokens; --max-length to change it); "
                           "head+tail truncation cuts train ")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["max_length"] == 24 and config["truncation"] == "head+tail"
    monkeypatch.setattr(run_module, "DEFAULT_MAX_LENGTH", 4096)
    lines = []
    train_run(None, str(weights_dir), data_dir, make_config(None, epochs=1, max_steps=2), tmp_path / "run2",
            log=lines.append)
    said = next(line for line in lines if line.startswith("length:"))
    assert "(the longest training text, within the default cap of 1024)" in said  # GPT-2's context is below it
