"""Classifying new text from Python and the command line."""

from __future__ import annotations

import json

import pytest
import torch

from gptclassify.cli import main
from gptclassify.inference.predict import Classifier, classify_text
from gptclassify.inference.evaluate import evaluate_run
from gptclassify.training.run import train_run
from gptclassify.config import make_config
from helpers import small_gpt2_dir, sms_slice_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small GPT-2 fine-tuned for a few steps on a slice of the real data."""
    tmp = tmp_path_factory.mktemp("run")
    data, weights = sms_slice_dir(tmp), small_gpt2_dir(tmp)
    cfg = make_config(None, epochs=1, max_steps=8, prefix_dtype="float32")  # compared to 1e-5 below, on any CPU
    train_run(None, str(weights), data, cfg, tmp / "run", log=lambda *a: None)
    return tmp / "run", data


def test_predict_matches_evaluation_and_is_order_independent(trained_run, sms):
    run, data = trained_run
    clf = Classifier.load(run, device="cpu")
    texts = sms[:70]
    batched = clf.predict(texts, batch_size=16)
    one_by_one = [clf.predict(t) for t in texts]
    for a, b in zip(batched, one_by_one):
        assert a["label"] == b["label"]
        assert abs(a["score"] - b["score"]) < 1e-5
        assert set(a["probabilities"]) == {"ham", "spam"}
        assert abs(sum(a["probabilities"].values()) - 1) < 1e-5
        assert a["score"] == max(a["probabilities"].values())
    # the same predictions as full-set evaluation of the test split
    import pandas as pd

    test = pd.read_csv(data / "test.csv", keep_default_na=False)
    predicted = [p["label"] for p in clf.predict(test["text"].tolist())]
    accuracy = sum(p == y for p, y in zip(predicted, test["label"])) / len(test)
    assert accuracy == evaluate_run(run, data, "test")["accuracy"]
    assert classify_text(texts[0], clf) == batched[0]["label"]


def test_long_and_empty_texts(trained_run):
    clf = Classifier.load(trained_run[0], device="cpu")
    long_text = "hello, are we still meeting today " + "win a prize now " * 500 + "call me back"
    out = clf.predict(["", long_text])  # far past max_length: truncated as in training (the default, head+tail)
    assert all(o["label"] in ("ham", "spam") for o in out)
    assert clf.truncation == "head+tail"
    ids = clf.tokenizer.encode(long_text)
    half = clf.max_length // 2
    truncated = clf.tokenizer.decode(ids[:clf.max_length - half] + ids[-half:])
    assert abs(clf.predict(truncated)["score"] - out[1]["score"]) < 1e-5


def test_cli_predict_formats(trained_run, tmp_path, capsys, monkeypatch):
    run = str(trained_run[0])
    assert main(["predict", run, "Free entry! Text WIN to 80086", "see you at 5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["Free entry! Text WIN to 80086", "see you at 5"]
    assert main(["predict", run, "--format", "csv", "a, \"quoted\" text"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "text,label,score,p_ham,p_spam" and out[1].startswith('"a, ""quoted"" text",')
    assert main(["predict", run, "--format", "table", "hello"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("hello")
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("first\n\nsecond\n"))
    assert main(["predict", run, "-"]) == 0
    assert [json.loads(x)["text"] for x in capsys.readouterr().out.splitlines()] == ["first", "second"]
    (tmp_path / "in.jsonl").write_text('{"msg": "one"}\n{"msg": "two"}\n')
    assert main(["predict", run, "--input", str(tmp_path / "in.jsonl"), "--text-column", "msg"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_cli_predict_1000_texts_is_one_load_and_batched(trained_run, tmp_path, capsys, monkeypatch, sms):
    (tmp_path / "texts.txt").write_text("\n".join(sms[:1000]) + "\n", encoding="utf-8")
    loads, forwards = [], []
    real_load = Classifier.load.__func__

    def counting_load(cls, *args, **kwargs):
        clf = real_load(cls, *args, **kwargs)
        loads.append(clf)
        clf.model.out_head.register_forward_hook(lambda *a: forwards.append(a[1][0].shape[0]))
        return clf

    monkeypatch.setattr(Classifier, "load", classmethod(counting_load))
    assert main(["predict", str(trained_run[0]), "--input", str(tmp_path / "texts.txt"), "--batch-size", "64"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1000
    assert len(loads) == 1
    assert len(forwards) == 16 and sum(forwards) == 1000  # ceil(1000 / 64) forward passes


def test_predict_errors(trained_run, tmp_path, capsys):
    cases = [
        (["predict", str(tmp_path), "hi"], "not a gptclassify run"),
        (["predict", str(trained_run[0])], "no texts"),
        (["predict", str(trained_run[0]), "--input", str(tmp_path / "none.txt")], "none.txt"),
        (["predict", str(trained_run[0]), "--input", str(tmp_path / "x.csv")], "--text-column"),
    ]
    (tmp_path / "x.csv").write_text("a\nb\n")
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_incompatible_checkpoint(trained_run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_run[0], bad)
    config = json.loads((bad / "config.json").read_text())
    config["model"]["emb_dim"] = 128
    (bad / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(bad), "hi"]) == 1
    assert "has shape" in capsys.readouterr().err
    del config["id2label"]
    (bad / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(bad), "hi"]) == 1
    assert "missing 'id2label'" in capsys.readouterr().err
    torch.manual_seed(0)
