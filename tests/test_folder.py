"""Texts kept as files: `prepare folder` (one folder per class) and `predict --input FOLDER`."""

from __future__ import annotations

import csv
import json
import os
from html import escape

import pandas as pd
import pytest

from conftest import SMS_FILE
from gptclassify.cli import main
from gptclassify.config import make_config
from gptclassify.inference.predict import Classifier
from gptclassify.training.run import train_run
from helpers import small_gpt2_dir


def sms_folder(root, n_ham=40, n_spam=30):
    """The first real messages of each class, one file each, under ham/ and spam/ (every fifth a
    folder deeper), each file ending in a newline; and a hidden file and folder to be skipped."""
    texts, counts = {}, {"ham": 0, "spam": 0}
    with open(SMS_FILE, encoding="utf-8") as f:
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            if counts[label] < {"ham": n_ham, "spam": n_spam}[label] and text.strip():
                counts[label] += 1
                name = f"{label}/{'old/' if counts[label] % 5 == 0 else ''}{counts[label]:03d}.txt"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text + "\n", encoding="utf-8")
                texts[name] = text.rstrip()
    (root / "spam" / ".DS_Store").write_bytes(b"\x00\x01binary")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return texts


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("folder")
    texts = sms_folder(tmp / "docs")
    assert main(["prepare", "folder", str(tmp / "docs"), "--out", str(tmp / "data")]) == 0
    cfg = make_config(None, epochs=1, max_steps=4, prefix_dtype="float32")
    train_run(None, str(small_gpt2_dir(tmp)), tmp / "data", cfg, tmp / "run", log=lambda *a: None)
    return tmp, texts


def test_prepare_folder_keeps_every_file_once_with_its_class(folder_run):
    tmp, texts = folder_run
    splits = pd.concat([pd.read_csv(tmp / "data" / f"{s}.csv", keep_default_na=False, dtype=str)
                        for s in ("train", "validation", "test")])
    assert list(splits.columns) == ["text", "label", "file"]
    assert sorted(splits["file"]) == sorted(texts)  # no hidden file, none twice
    for row in splits.itertuples():
        assert row.text == texts[row.file] and row.label == row.file.split("/")[0]
    info = json.loads((tmp / "data" / "dataset.json").read_text())
    assert info["labels"] == ["ham", "spam"] and info["files"] == len(texts)
    test = pd.read_csv(tmp / "data" / "test.csv", keep_default_na=False)
    assert set(test["label"]) == {"ham", "spam"}  # stratified


def test_prepare_folder_digest_follows_the_files(tmp_path, capsys):
    sms_folder(tmp_path / "docs", 6, 6)
    digests = []
    for change in (None, "ham/001.txt"):
        if change:
            (tmp_path / "docs" / change).write_text("changed\n")
        assert main(["prepare", "folder", str(tmp_path / "docs"), "--out", str(tmp_path / "data")]) == 0
        digests.append(json.loads((tmp_path / "data" / "dataset.json").read_text())["source_sha256"])
    assert digests[0] != digests[1]
    assert "12 files in 2 class folders" in capsys.readouterr().out


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "loose.txt").write_text("no class\n"), "loose.txt: a file outside any class folder"),
    (lambda d: (d / "empty-class").mkdir(), "empty-class: a class folder with no files"),
    (lambda d: (d / "ham" / "bad.txt").write_bytes(b"caf\xe9\n"), "bad.txt: line 1: not valid utf-8"),
    (lambda d: (d / "spam" / "blank.txt").write_text(" \n\n"), "blank.txt: empty text"),
    (lambda d: (d / "ham" / "c.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), "c.pdf: a binary file"),
    (lambda d: (d / "ham" / "c.docx").write_bytes(b"PK\x03\x04\x14\x00\x06\x00"), "c.docx: a binary file"),
    (lambda d: (d / "ham" / os.fsdecode(b"caf\xe9.txt")).write_text("hi\n"), "a file name that is not valid UTF-8"),
])
def test_prepare_folder_refuses_in_one_line(tmp_path, capsys, damage, message):
    sms_folder(tmp_path / "docs", 6, 6)
    damage(tmp_path / "docs")
    assert main(["prepare", "folder", str(tmp_path / "docs"), "--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "data").exists()


def test_prepare_folder_follows_links_once_and_refuses_an_unreadable_folder(tmp_path, capsys):
    """A class folder that links to where its files are kept is read; a link back up the tree is
    not a loop; a folder that cannot be listed is refused by name, never silently skipped."""
    elsewhere = sms_folder(tmp_path / "kept", 6, 6)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ham").symlink_to(tmp_path / "kept" / "ham", target_is_directory=True)
    (tmp_path / "docs" / "spam").symlink_to(tmp_path / "kept" / "spam", target_is_directory=True)
    (tmp_path / "kept" / "spam" / "up").symlink_to(tmp_path / "docs", target_is_directory=True)  # a loop
    assert main(["prepare", "folder", str(tmp_path / "docs"), "--out", str(tmp_path / "data")]) == 0
    import pandas as pd

    rows = pd.concat(pd.read_csv(tmp_path / "data" / f"{split}.csv", keep_default_na=False)
                     for split in ("train", "validation", "test"))
    assert sorted(rows["file"]) == sorted(elsewhere) and rows["file"].is_unique
    if os.geteuid() != 0:  # root reads every folder
        (tmp_path / "kept" / "ham" / "old").chmod(0)
        try:
            assert main(["prepare", "folder", str(tmp_path / "docs"), "--out", str(tmp_path / "d2")]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "old: cannot be read" in err, err
        finally:
            (tmp_path / "kept" / "ham" / "old").chmod(0o755)


def test_prepare_folder_without_class_folders(tmp_path, capsys):
    (tmp_path / "none").mkdir()
    assert main(["prepare", "folder", str(tmp_path / "none"), "--out", str(tmp_path / "d")]) == 1
    assert "no class folders" in capsys.readouterr().err
    assert main(["prepare", "folder", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 1
    assert "no such folder" in capsys.readouterr().err
    sms_folder(tmp_path / "docs", 6, 6)
    assert main(["prepare", "folder", str(tmp_path / "docs"), "--out", str(tmp_path / "docs" / "data")]) == 1
    assert "is inside" in capsys.readouterr().err and not (tmp_path / "docs" / "data").exists()


def test_predict_a_folder_names_each_file(folder_run, tmp_path, capsys):
    tmp, texts = folder_run
    (tmp_path / "new" / "deep").mkdir(parents=True)
    names = sorted(texts)[:5]
    for i, name in enumerate(names):
        (tmp_path / "new" / ("deep" if i % 2 else "") / f"{i}.txt").write_text(texts[name] + "\n\n")
    (tmp_path / "new" / "empty.txt").write_text("")
    (tmp_path / "new" / ".hidden").write_text("not a text")
    assert main(["predict", str(tmp / "run"), "--input", str(tmp_path / "new")]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["file"] for r in rows] == ["0.txt", "2.txt", "4.txt", "deep/1.txt", "deep/3.txt"]
    assert "skipped 1 empty file(s)" in out.err
    clf = Classifier.load(tmp / "run", device="cpu")
    direct = clf.predict([texts[names[i]] for i in (0, 2, 4, 1, 3)])
    for r, d in zip(rows, direct):
        assert r["label"] == d["label"] and r["score"] == pytest.approx(d["score"], abs=1e-6)
    assert main(["predict", str(tmp / "run"), "--input", str(tmp_path / "new"), "--output", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["file", "label", "score", "p_ham", "p_spam"] and [r[0] for r in table[1:]] == [r["file"] for r in rows]


def test_predict_a_latin_1_folder_with_encoding(folder_run, tmp_path, capsys):
    """Files saved by an old Windows program: refused naming the file and --encoding, then read with it."""
    tmp, texts = folder_run
    (tmp_path / "old").mkdir()
    words = [texts[name] + " caf\u00e9 \u00a3100" for name in sorted(texts)[:3]]
    for i, text in enumerate(words):
        (tmp_path / "old" / f"{i}.txt").write_bytes(text.encode("latin-1"))
    assert main(["predict", str(tmp / "run"), "--input", str(tmp_path / "old")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0.txt: line 1: not valid utf-8 text" in err and "--encoding" in err, err
    assert main(["predict", str(tmp / "run"), "--input", str(tmp_path / "old"), "--encoding", "latin-1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    direct = Classifier.load(tmp / "run", device="cpu").predict(words)
    assert [r["file"] for r in rows] == ["0.txt", "1.txt", "2.txt"]
    assert [r["label"] for r in rows] == [d["label"] for d in direct]
    assert [r["score"] for r in rows] == pytest.approx([d["score"] for d in direct], abs=1e-6)


def test_predict_a_folder_refusals(folder_run, tmp_path, capsys):
    tmp, _ = folder_run
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n")
    (tmp_path / "none").mkdir()
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "a.txt").write_text("a text\n")
    (tmp_path / "binary" / "scan.pdf").write_bytes(b"%PDF-1.7\n")
    for argv, message in [
        (["--input", str(tmp_path / "none")], "no files"),
        (["--input", str(tmp_path / "blank")], "every file is empty"),
        (["--input", str(tmp_path / "blank"), "--text-column", "x"], "a folder of files is the whole input"),
        (["--input", str(tmp_path / "binary")], "scan.pdf: a binary file"),
        (["hello", "--input", str(tmp_path / "blank")], "a folder of files is the whole input"),
    ]:
        assert main(["predict", str(tmp / "run"), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_the_report_names_the_file_of_each_mistake(folder_run):
    tmp, texts = folder_run
    assert main(["report", str(tmp / "run")]) == 0
    page = (tmp / "run" / "report.html").read_text(encoding="utf-8")
    mistakes = page[page.index("<h2 id=mistakes>"):].split("<h2", 2)[1]
    test = pd.read_csv(tmp / "data" / "test.csv", keep_default_na=False)
    shown = [f for f in test["file"] if f"<td class=t>{f}</td>" in mistakes]
    assert "<th class=t>file</th>" in mistakes and (shown or "<p>none</p>" in mistakes)
    for f in shown:  # each file in the cell before its own text's
        assert f"<td class=t>{f}</td><td class=t>{escape(texts[f][:20])}" in mistakes


def test_predict_a_folder_refuses_a_bad_file_before_any_prediction(folder_run, tmp_path, capsys, monkeypatch):
    tmp, _ = folder_run
    (tmp_path / "in").mkdir()
    for i in range(30):
        (tmp_path / "in" / f"{i:02d}.txt").write_text(f"message {i}\n")
    (tmp_path / "in" / "zz.txt").write_bytes(b"caf\xe9\n")  # the last file read
    loaded = []
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, *a, **k: loaded.append(1)))
    assert main(["predict", str(tmp / "run"), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o.jsonl")]) == 1
    assert "zz.txt: line 1: not valid utf-8" in capsys.readouterr().err
    assert not loaded and not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".o.jsonl.parts"))
