"""`prepare csv --task`: multi-label sets and regression targets read, checked and split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from gptclassify.cli import main
from gptclassify.data.tasks import multi_label_split

TAGS = ["billing|refund", "refund", "bug", "bug|account", "account", "billing", "bug", "account|refund", "",
        "billing", "account|bug", "billing|refund", "rare"]


def write_csv(path, rows, header=("text", "tags")):
    pd.DataFrame(rows, columns=list(header)).to_csv(path, index=False)
    return path


def test_multi_label_sets_round_trip_and_every_common_label_reaches_every_split(tmp_path, capsys):
    rows = [(f"ticket {i}: {tags or 'no tag'}", tags) for i in range(40) for tags in TAGS[:-1]] + [("odd one", "rare")]
    src = write_csv(tmp_path / "tickets.csv", rows)
    assert main(["prepare", "csv", str(src), "--label-column", "tags", "--task", "multi-label",
                 "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "note: label 'rare' (1 texts) is missing from the validation and test split" in out
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["task"] == "multi-label" and info["labels"] == ["account", "billing", "bug", "rare", "refund"]
    parts = {s: pd.read_csv(tmp_path / "d" / f"{s}.csv", keep_default_na=False, dtype=str) for s in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == len(rows)
    for split, part in parts.items():
        for label in ("account", "billing", "bug", "refund"):  # each split holds its share of each label, within one
            share = sum(label in t.split("|") for t in part["label"]) / sum(label in t.split("|") for _, t in rows)
            assert abs(share - {"train": 0.7, "validation": 0.1, "test": 0.2}[split]) < 0.02, (split, label)
    assert sorted(t for p in parts.values() for t in p["label"]) == sorted("|".join(sorted(t.split("|"))) if t else ""
                                                                            for _, t in rows)


def test_multi_label_from_jsonl_lists_and_a_label_holding_the_separator(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"t{i}", "label": ["a", "b"] if i % 2 else []}) for i in range(30)))
    assert main(["prepare", "csv", str(src), "--task", "multi-label", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["labels"] == ["a", "b"]
    src.write_text(json.dumps({"text": "x", "label": ["a|b"]}) + "\n")
    assert main(["prepare", "csv", str(src), "--task", "multi-label", "--out", str(tmp_path / "e")]) == 1


def test_regression_targets_are_numbers_split_across_their_range(tmp_path, capsys):
    rows = [(f"review {i}", str(1 + i % 5)) for i in range(100)]
    src = write_csv(tmp_path / "r.csv", rows, ("text", "stars"))
    assert main(["prepare", "csv", str(src), "--label-column", "stars", "--task", "regression",
                 "--out", str(tmp_path / "d")]) == 0
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["task"] == "regression" and info["target"]["test"]["min"] == 1 and info["target"]["test"]["max"] == 5
    test = pd.read_csv(tmp_path / "d" / "test.csv")
    assert len(test) == 20 and sorted(test["label"].value_counts().tolist()) == [4, 4, 4, 4, 4]
    write_csv(src, rows + [("bad", "4 stars")], ("text", "stars"))
    capsys.readouterr()
    assert main(["prepare", "csv", str(src), "--label-column", "stars", "--task", "regression",
                 "--out", str(tmp_path / "e")]) == 1
    assert capsys.readouterr().err.strip().endswith("line 102, column 'stars': not a number: '4 stars'")


def test_iterative_stratification_places_every_text_once():
    df = pd.DataFrame({"text": [str(i) for i in range(200)],
                       "label": [sorted({"abc"[i % 3], "xy"[i % 2]} if i % 7 else set()) for i in range(200)]})
    splits, notes = multi_label_split(df, ["a", "b", "c", "x", "y"], 0.1, 0.2, seed=1)
    assert sorted(int(t) for p in splits.values() for t in p["text"]) == list(range(200)) and not notes
    assert [len(splits[s]) for s in ("train", "validation", "test")] == pytest.approx([140, 20, 40], abs=2)


# ---------------------------------------------------------------- training, evaluating, predicting


def sms_rows(n=160):
    from conftest import sms_texts

    return sms_texts()[:n]


def tags_of(text: str) -> str:
    tags = [t for t, hit in (("number", any(c.isdigit() for c in text)), ("question", "?" in text),
                             ("shout", any(w.isupper() and len(w) > 2 for w in text.split()))) if hit]
    return "|".join(tags)


@pytest.fixture(scope="module")
def multi_label_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ml")
    src = write_csv(tmp / "tags.csv", [(t, tags_of(t)) for t in sms_rows()])
    assert main(["prepare", "csv", str(src), "--label-column", "tags", "--task", "multi-label", "--out", str(tmp / "d")]) == 0
    return tmp / "d"


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reg")
    src = write_csv(tmp / "len.csv", [(t, str(round(len(t.split()) / 10, 2))) for t in sms_rows()], ("text", "words"))
    assert main(["prepare", "csv", str(src), "--label-column", "words", "--task", "regression", "--out", str(tmp / "d")]) == 0
    return tmp / "d"


def logits_of(clf, texts):
    """The head's raw outputs for `texts`, through the run's own preprocessing."""
    from gptclassify.classifier.prefix import run_logits
    from gptclassify.data.batches import Collate

    ids, _, lengths = Collate(clf.tokenizer.pad_id, clf.pad_to)([(clf.encode(t), 0) for t in texts])
    with torch.no_grad():
        return run_logits(clf.model, clf.prefix, ids, lengths, clf.pooling).float()


def test_multi_label_trains_predicts_and_its_loss_is_torchs_binary_cross_entropy(multi_label_dir, weights_dir,
                                                                                  tmp_path, capsys):
    from gptclassify.data.splits import load_data_split
    from gptclassify.inference.evaluate import evaluate_run
    from gptclassify.inference.predict import Classifier

    run = tmp_path / "run"
    assert main(["train", "--data", str(multi_label_dir), "--weights", str(weights_dir), "--out", str(run),
                 "--epochs", "2", "--lr", "1e-3", "--class-weight", "balanced", "--prefix-dtype", "float32"]) == 0
    log = capsys.readouterr().out
    assert "train micro-F1" in log and "label thresholds: rule " in log and "positive weights" in log
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "multi-label" and config["problem_type"] == "multi_label_classification"
    assert len(config["thresholds"]) == 3 and config["num_classes"] == 3
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "per_label"} <= set(test)
    clf = Classifier.load(run, "cpu")
    texts, targets = load_data_split(multi_label_dir, "test", clf.labels, "multi-label")
    logits, y = logits_of(clf, texts), torch.tensor(targets)
    reference = torch.nn.BCEWithLogitsLoss()(logits, y).item()  # torch's own, on the same logits
    assert abs(test["loss"] - reference) < 1e-5
    predictions = clf.predict(texts)
    chosen = torch.sigmoid(logits) >= torch.tensor(config["thresholds"])
    assert [p["labels"] for p in predictions] == [[l for l, c in zip(clf.labels, row) if c] for row in chosen.tolist()]
    hamming = (chosen != (y > 0.5)).float().mean().item()
    assert abs(test["hamming_loss"] - hamming) < 1e-6
    again = evaluate_run(run, multi_label_dir, "test", "cpu")
    assert abs(again["loss"] - test["loss"]) < 1e-5 and again["micro_f1"] == test["micro_f1"]
    capsys.readouterr()
    assert main(["predict", str(run), "Call 0800 NOW?", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "text,labels,p_number,p_question,p_shout" and out[1].startswith("Call 0800 NOW?,")


def test_regression_trains_standardized_and_reports_in_the_targets_units(regression_dir, weights_dir, tmp_path):
    from gptclassify.data.splits import load_data_split
    from gptclassify.inference.evaluate import evaluate_run
    from gptclassify.inference.predict import Classifier

    run = tmp_path / "run"
    assert main(["train", "--data", str(regression_dir), "--weights", str(weights_dir), "--out", str(run),
                 "--epochs", "2", "--lr", "1e-3", "--loss", "huber", "--prefix-dtype", "float32"]) == 0
    config = json.loads((run / "config.json").read_text())
    mean, std = config["target_scale"]
    train_y = torch.tensor(load_data_split(regression_dir, "train", ["value"], "regression")[1], dtype=torch.float64)
    assert abs(mean - train_y.mean().item()) < 1e-9 and abs(std - train_y.std(correction=0).item()) < 1e-9
    test = json.loads((run / "metrics.json").read_text())["test"]
    clf = Classifier.load(run, "cpu")
    texts, values = load_data_split(regression_dir, "test", clf.labels, "regression")
    predicted = torch.tensor([p["value"] for p in clf.predict(texts)], dtype=torch.float64)
    truth = torch.tensor(values, dtype=torch.float64)
    assert abs(test["rmse"] - (predicted - truth).pow(2).mean().sqrt().item()) < 1e-4
    assert abs(test["mae"] - (predicted - truth).abs().mean().item()) < 1e-4
    standardized = (logits_of(clf, texts).reshape(-1), ((truth - mean) / std).float())
    assert abs(test["loss"] - torch.nn.HuberLoss()(*standardized).item()) < 1e-5  # torch's own Huber loss
    again = evaluate_run(run, regression_dir, "test", "cpu")
    assert abs(again["rmse"] - test["rmse"]) < 1e-6 and abs(again["r2"] - test["r2"]) < 1e-6
    assert set(clf.predict("hello there")) == {"value"}


def test_settings_a_task_cannot_use_are_refused(regression_dir, multi_label_dir, weights_dir, tmp_path, capsys):
    for data, extra, message in [
        (regression_dir, ["--class-weight", "balanced"], "a regression target has none"),
        (multi_label_dir, ["--loss", "huber"], "--loss huber is for a regression target"),
        (regression_dir, ["--select-by", "macro-f1"], "--select-by macro-f1 needs classes"),
    ]:
        capsys.readouterr()
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(tmp_path / "r"),
                     *extra]) == 1
        assert message in capsys.readouterr().err


def test_the_service_answers_in_the_runs_shape_and_its_schema_says_so(multi_label_dir, regression_dir, weights_dir,
                                                                     tmp_path):
    from fastapi.testclient import TestClient

    from gptclassify.inference.predict import Classifier
    from gptclassify.inference.serve import create_app

    for data, shape in ((multi_label_dir, "LabelSetResponse"), (regression_dir, "ValueResponse")):
        run = tmp_path / shape
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(run),
                     "--epochs", "1", "--max-steps", "2"]) == 0
        clf = Classifier.load(run, "cpu")
        with TestClient(create_app(clf, run)) as client:
            answer = client.post("/v1/classify", json={"texts": ["Call 0800 NOW?", "ok"]})
            assert answer.status_code == 200
            assert answer.json()["predictions"] == json.loads(json.dumps(clf.predict(["Call 0800 NOW?", "ok"])))
            schema = client.get("/openapi.json").json()
            assert schema["paths"]["/v1/classify"]["post"]["responses"]["200"]["content"]["application/json"][
                "schema"]["$ref"].endswith(shape)
            assert client.get("/v1/model").json()["task"] == clf.task


# ---------------------------------------------------------------- pairs of texts


def pair_rows(n=160):
    """(text, text_pair, same?): a message with itself reworded, or with another message."""
    texts = sms_rows(n)
    return [(t, t.lower() if i % 2 else texts[(i * 7 + 3) % n], "same" if i % 2 else "different")
            for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    src = write_csv(tmp / "pairs.csv", pair_rows(), ("question", "answer", "label"))
    assert main(["prepare", "csv", str(src), "--text-column", "question", "--text-pair-column", "answer",
                 "--out", str(tmp / "d")]) == 0
    return tmp / "d"


def test_pairs_train_predict_from_python_files_and_the_service(pair_dir, weights_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from gptclassify.data.splits import load_data_split
    from gptclassify.errors import UserError
    from gptclassify.inference.predict import Classifier
    from gptclassify.inference.serve import create_app

    texts, _ = load_data_split(pair_dir, "test", ["different", "same"])
    assert all(isinstance(t, tuple) and len(t) == 2 for t in texts)
    run = tmp_path / "run"
    assert main(["train", "--data", str(pair_dir), "--weights", str(weights_dir), "--out", str(run),
                 "--epochs", "1", "--max-steps", "3"]) == 0
    clf = Classifier.load(run, "cpu")
    assert clf.pairs
    ids = clf.encode(("Call now", "later"))
    sep = clf.tokenizer.pad_id  # GPT-2's end-of-text token joins the two
    assert ids == clf.tokenizer.encode("Call now") + [sep] + clf.tokenizer.encode("later")
    one = clf.predict(("Call now", "later"))
    assert set(one) == {"label", "score", "probabilities"}
    with pytest.raises(UserError, match="this run classifies pairs"):
        clf.predict("Call now")
    src = write_csv(tmp_path / "in.csv", [(a, b) for a, b, _ in pair_rows(30)], ("q", "a"))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(src), "--text-column", "q", "--text-pair-column", "a",
                 "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = clf.predict([(a, b) for a, b, _ in pair_rows(30)])
    assert [(r["text"], r["text_pair"]) for r in lines] == [(a, b) for a, b, _ in pair_rows(30)]
    assert [r["probabilities"] for r in lines] == json.loads(json.dumps([p["probabilities"] for p in expected]))
    with TestClient(create_app(clf, run)) as client:
        answer = client.post("/v1/classify", json={"pairs": [["Call now", "later"]]})
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == one["label"]
        refused = client.post("/v1/classify", json={"texts": ["Call now"]})
        assert refused.status_code == 422 and "this run classifies pairs" in refused.json()["error"]


def test_the_longer_of_a_pair_is_cut_first_as_transformers_cuts_it():
    """Our joining against the tokenizers library's own `longest_first` truncation (what
    transformers' tokenizers, and so an exported run's, run) on GPT-2's vocabulary: the same ids."""
    from hypothesis import given, settings, strategies as st
    from tokenizers import processors

    from gptclassify.data.gpt2_files import gpt2_tokenizers_json
    from gptclassify.data.tokenizer import get_tokenizer

    ours = get_tokenizer("gpt2")
    theirs = gpt2_tokenizers_json(ours.encoding)
    theirs.post_processor = processors.TemplateProcessing(single="$A", pair="$A <|endoftext|> $B:1",
                                                          special_tokens=[("<|endoftext|>", ours.pad_id)])
    words = st.lists(st.sampled_from(["spam", "call", "now", "free", "prize", "ok", "later", "see", "you", "!"]),
                     min_size=1, max_size=40).map(" ".join)  # empty texts are refused where they are read

    @settings(max_examples=200, deadline=None)
    @given(words, words, st.integers(2, 50))
    def check(a, b, max_length):
        theirs.enable_truncation(max_length, strategy="longest_first")
        assert ours.fit(ours.encode_raw((a, b)), max_length) == theirs.encode(a, b).ids

    check()


@pytest.mark.parametrize("rows,args,message", [
    ([("a", "b", "x")] * 12, ["--text-pair-column", "nope"], "no column 'nope' (columns: q, a, label)"),
    ([("a", " ", "x")] * 12, ["--text-pair-column", "a"], "line 2, column 'a': empty text"),
    ([("a", "b", "inf")] * 12, ["--text-pair-column", "a", "--task", "regression"], "not a finite number: 'inf'"),
    ([("a", "b", "x")] * 12, ["--task", "multi-label", "--balance"], "--balance undersamples classes"),
    ([("a", "b", "x")] * 12, ["--task", "multi-label", "--label-separator", ""], "--label-separator must not be empty"),
])
def test_bad_task_input_is_one_line(tmp_path, capsys, rows, args, message):
    src = write_csv(tmp_path / "in.csv", rows, ("q", "a", "label"))
    capsys.readouterr()
    assert main(["prepare", "csv", str(src), "--text-column", "q", *args, "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("recipe", [["--trainable", "lora", "--lora-rank", "4"], ["--trainable", "last-2-blocks"],
                                    ["--no-cache"]])
def test_every_recipe_trains_each_shape(multi_label_dir, regression_dir, weights_dir, tmp_path, recipe):
    from gptclassify.inference.predict import Classifier

    for data in (multi_label_dir, regression_dir):
        run = tmp_path / data.parent.name
        assert main(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(run), "--epochs", "1",
                     "--max-steps", "3", *recipe]) == 0
        metrics = json.loads((run / "metrics.json").read_text())["test"]
        assert ("micro_f1" in metrics) == (data == multi_label_dir) and ("rmse" in metrics) == (data == regression_dir)
        assert Classifier.load(run, "cpu").predict(["Call 0800 now?"])


def test_any_label_sets_and_numbers_survive_prepare_and_read_back(tmp_path_factory):
    """Random tag sets (any printable text but the separator) and random numbers: what `prepare`
    writes, `load_data_split` reads back as the same sets and values."""
    from hypothesis import given, settings, strategies as st

    from gptclassify.data.splits import dataset_info, load_data_split

    tag = st.text(st.characters(codec="utf-8", exclude_characters="|\r\n\x00"), min_size=1, max_size=8).map(str.strip) \
        .filter(bool)
    rows = st.lists(st.tuples(st.lists(tag, max_size=3), st.floats(-1e6, 1e6, allow_nan=False)), min_size=12,
                    max_size=30)

    @settings(max_examples=25, deadline=None)
    @given(rows)
    def check(rows):
        tmp = tmp_path_factory.mktemp("fuzz")
        src = tmp / "in.jsonl"
        src.write_text("\n".join(json.dumps({"text": f"text {i}", "tags": tags, "value": v})
                                 for i, (tags, v) in enumerate(rows)) + "\n")
        if not any(tags for tags, _ in rows):
            return
        assert main(["prepare", "csv", str(src), "--label-column", "tags", "--task", "multi-label",
                     "--out", str(tmp / "ml")]) == 0
        assert main(["prepare", "csv", str(src), "--label-column", "value", "--task", "regression",
                     "--out", str(tmp / "reg")]) == 0
        _, labels, sep = dataset_info(tmp / "ml")
        expected = {f"text {i}": sorted(set(tags)) for i, (tags, _) in enumerate(rows)}
        values = {f"text {i}": v for i, (_, v) in enumerate(rows)}
        for split in ("train", "validation", "test"):
            texts, targets = load_data_split(tmp / "ml", split, labels, "multi-label", sep)
            for text, row in zip(texts, targets):
                assert [label for label, on in zip(labels, row) if on] == expected[text]
            texts, numbers = load_data_split(tmp / "reg", split, ["value"], "regression")
            assert all(numbers[k] == values[t] for k, t in enumerate(texts))

    check()
