"""`prepare csv --task`: multi-label sets and regression targets read, checked and split."""

from __future__ import annotations

import json

import pandas as pd
import pytest

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


def test_training_refuses_what_it_cannot_read_yet_in_one_line(tmp_path, capsys):
    src = write_csv(tmp_path / "r.csv", [(f"review {i}", str(i % 5)) for i in range(50)], ("text", "stars"))
    assert main(["prepare", "csv", str(src), "--label-column", "stars", "--task", "regression",
                 "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "d"), "--model", "gpt2", "--weights", "random",
                 "--out", str(tmp_path / "run")]) == 1
    assert "holds regression data, which training does not read yet" in capsys.readouterr().err


def test_iterative_stratification_places_every_text_once():
    df = pd.DataFrame({"text": [str(i) for i in range(200)],
                       "label": [sorted({"abc"[i % 3], "xy"[i % 2]} if i % 7 else set()) for i in range(200)]})
    splits, notes = multi_label_split(df, ["a", "b", "c", "x", "y"], 0.1, 0.2, seed=1)
    assert sorted(int(t) for p in splits.values() for t in p["text"]) == list(range(200)) and not notes
    assert [len(splits[s]) for s in ("train", "validation", "test")] == pytest.approx([140, 20, 40], abs=2)
