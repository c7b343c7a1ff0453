"""Preparing datasets: the book's split row for row, users' own files, downloads, bad input."""

from __future__ import annotations

import http.server
import io
import json
import threading
import zipfile
from functools import partial

import pandas as pd
import pytest

from conftest import SMS_FILE
from gptclassify.data.batches import Collate, TextDataset
from gptclassify.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCLASSIFY_CACHE", str(tmp_path / "cache"))


def book_split():
    """The book's own lines (chapter 6), written out here as the reference."""
    df = pd.read_csv(SMS_FILE, sep="\t", header=None, names=["Label", "Text"])
    num_spam = df[df["Label"] == "spam"].shape[0]
    ham_subset = df[df["Label"] == "ham"].sample(num_spam, random_state=123)
    balanced_df = pd.concat([ham_subset, df[df["Label"] == "spam"]])
    balanced_df = balanced_df.sample(frac=1, random_state=123).reset_index(drop=True)
    train_end = int(len(balanced_df) * 0.7)
    validation_end = train_end + int(len(balanced_df) * 0.1)
    return {"train": balanced_df[:train_end], "validation": balanced_df[train_end:validation_end],
            "test": balanced_df[validation_end:]}


def read_out(out, split):
    return pd.read_csv(out / f"{split}.csv", keep_default_na=False, dtype=str)


def test_sms_spam_is_the_books_split_row_for_row(tmp_path):
    out = tmp_path / "sms"
    assert main(["prepare", "sms-spam", "--out", str(out), "--source", str(SMS_FILE)]) == 0
    expected = book_split()
    for split, n in (("train", 1045), ("validation", 149), ("test", 300)):
        ours = read_out(out, split)
        assert len(ours) == n
        assert ours["text"].tolist() == expected[split]["Text"].tolist()
        assert ours["label"].tolist() == expected[split]["Label"].tolist()
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == ["ham", "spam"]
    assert info["source_sha256"] == "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
    assert info["parameters"]["seed"] == 123 and info["reading"] == "book"
    assert sum(info["counts"]["train"].values()) == 1045


def test_exact_reading_keeps_all_lines_and_stratifies(tmp_path):
    out = tmp_path / "exact"
    assert main(["prepare", "sms-spam", "--out", str(out), "--source", str(SMS_FILE), "--exact", "--no-balance"]) == 0
    parts = {s: read_out(out, s) for s in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == 5574
    all_texts = pd.concat(parts.values())
    assert (all_texts["label"] == "spam").sum() == 747 and (all_texts["label"] == "ham").sum() == 4827
    for p in parts.values():  # each split keeps the 13.4% spam rate
        assert abs((p["label"] == "spam").mean() - 747 / 5574) < 0.01
    # quoting is off: a message with quotes survives whole
    assert any('"' in t for t in all_texts["text"])


def three_class_file(tmp_path, n=(60, 30, 15)):
    rows = [{"message": f"{label} message number {i}", "kind": label}
            for label, count in zip(("news", "sport", "weather"), n) for i in range(count)]
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_csv_three_classes_stratified_and_reproducible(tmp_path):
    src = three_class_file(tmp_path)
    args = ["prepare", "csv", str(src), "--text-column", "message", "--label-column", "kind"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "7"]) == 0
    info = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert info["labels"] == ["news", "sport", "weather"]
    assert info["counts"]["test"] == {"news": 12, "sport": 6, "weather": 3}
    assert info["counts"]["validation"] == {"news": 6, "sport": 3, "weather": 2}
    for split in ("train", "validation", "test"):
        assert read_out(tmp_path / "a", split).equals(read_out(tmp_path / "b", split))
    assert not read_out(tmp_path / "a", "train").equals(read_out(tmp_path / "c", "train"))
    # balancing undersamples each class to the smallest
    assert main([*args, "--out", str(tmp_path / "d"), "--balance"]) == 0
    counts = json.loads((tmp_path / "d" / "dataset.json").read_text())["counts"]
    assert all(sum(counts[s][label] for s in counts) == 15 for label in ("news", "sport", "weather"))


def test_csv_and_tsv_with_duplicates_report(tmp_path, capsys):
    df = pd.DataFrame({"t": ["a b", "a b", "c d", "e f", "g h", "i j"] * 5, "y": ["x", "y"] * 15})
    df.to_csv(tmp_path / "f.tsv", sep="\t", index=False)
    assert main(["prepare", "csv", str(tmp_path / "f.tsv"), "--out", str(tmp_path / "o"),
                 "--text-column", "t", "--label-column", "y"]) == 0
    info = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert info["duplicates"]["duplicate_texts"] == 30 - 5  # five distinct texts
    assert "duplicate texts: 25" in capsys.readouterr().out


def test_a_text_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    long = "word " * 60_000  # 300,000 characters: a long e-mail; the csv module's default limit is 131,072
    df = pd.DataFrame({"text": [long, "short one", "another"] * 20, "label": ["a", "b", "a"] * 20})
    df.to_csv(tmp_path / "long.csv", index=False)
    assert main(["prepare", "csv", str(tmp_path / "long.csv"), "--out", str(tmp_path / "o")]) == 0
    texts = [t for split in ("train", "validation", "test")
             for t in pd.read_csv(tmp_path / "o" / f"{split}.csv", keep_default_na=False)["text"]]
    assert texts.count(long) == 20


# ---------------------------------------------------------------- downloads


class ZipServer:
    def __init__(self, directory):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = partial(Quiet, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def sms_zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(SMS_FILE, "SMSSpamCollection")
        z.writestr("readme", "The SMS Spam Collection v.1")
    return buffer.getvalue()


def test_download_from_local_server_and_cache(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "sms.zip").write_bytes(sms_zip_bytes())
    server = ZipServer(tmp_path / "www")
    try:
        url = f"{server.url}/sms.zip"
        assert main(["prepare", "sms-spam", "--out", str(tmp_path / "o"), "--source", url]) == 0
        assert len(read_out(tmp_path / "o", "train")) == 1045
    finally:
        server.close()
    assert (tmp_path / "cache" / "sms+spam+collection.zip").is_file()


def test_corrupted_zip_is_caught(tmp_path, capsys):
    data = bytearray(sms_zip_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\0" * 64  # damage the compressed message data
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "sms.zip").write_bytes(bytes(data))
    server = ZipServer(tmp_path / "www")
    try:
        code = main(["prepare", "sms-spam", "--out", str(tmp_path / "o"), "--source", f"{server.url}/sms.zip"])
    finally:
        server.close()
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("gptclassify: error:") and "not a usable SMS Spam Collection zip" in err
    assert not (tmp_path / "o" / "train.csv").exists()
    assert not (tmp_path / "cache" / "sms+spam+collection.zip").exists()  # not kept for next time


def test_unreachable_url(tmp_path, capsys):
    assert main(["prepare", "sms-spam", "--out", str(tmp_path / "o"), "--source", "http://127.0.0.1:9/x.zip"]) == 1
    err = capsys.readouterr().err
    assert "download failed: http://127.0.0.1:9/x.zip" in err and err.count("\n") == 1


def test_checksum_mismatch_of_download(tmp_path, capsys, monkeypatch):
    import gptclassify.data.splits as data

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "sms.zip").write_bytes(sms_zip_bytes())
    server = ZipServer(tmp_path / "www")
    monkeypatch.setattr(data, "SMS_URLS", [f"{server.url}/sms.zip"])
    monkeypatch.setattr(data, "SMS_SHA256", "0" * 64)
    try:
        assert main(["prepare", "sms-spam", "--out", str(tmp_path / "o")]) == 1
    finally:
        server.close()
    assert "sha256" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input, one line each


def bad(tmp_path, name, content, *extra):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return ["prepare", "csv", str(path), "--out", str(tmp_path / "out"), *extra]


CASES = {
    "missing file": (lambda p: ["prepare", "csv", str(p / "nope.csv"), "--out", str(p / "o")], "no such file"),
    "wrong encoding": (lambda p: bad(p, "l1.csv", "text,label\ncaf\xe9,a\n".encode("latin-1")), "not valid utf-8"),
    "missing column": (lambda p: bad(p, "m.csv", "body,label\nhi,a\n"), "no column 'text'"),
    "empty text": (lambda p: bad(p, "e.csv", "text,label\nhi,a\n,b\nyo,a\n"), "empty text"),
    "single class": (lambda p: bad(p, "s.csv", "text,label\n" + "hi,a\n" * 20), "at least two classes"),
    "class left empty": (lambda p: bad(p, "c.csv", "text,label\n" + "hi,a\n" * 20 + "yo,b\n"), "has no example of class 'b'"),
    "unknown type": (lambda p: bad(p, "x.xlsx", "whatever"), "unknown file type"),
    "unparseable json": (lambda p: bad(p, "j.jsonl", "{not json\n"), "cannot parse"),
    "empty file": (lambda p: bad(p, "z.csv", ""), "cannot parse"),
    "sms file missing": (lambda p: ["prepare", "sms-spam", "--out", str(p / "o"), "--source", str(p / "none")], "no such file"),
    "sms zip without the file": (lambda p: zip_without_sms(p), "not a usable"),
}


def zip_without_sms(tmp_path):
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        z.writestr("other.txt", "nothing")
    return ["prepare", "sms-spam", "--out", str(tmp_path / "o"), "--source", str(tmp_path / "b.zip")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_error(case, tmp_path, capsys):
    make_args, message = CASES[case]
    code = main(make_args(tmp_path))
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("gptclassify: error:")
    assert message.lower() in err.lower()


def test_failed_prepare_leaves_existing_output_alone(tmp_path):
    out = tmp_path / "out"
    good = three_class_file(tmp_path)
    assert main(["prepare", "csv", str(good), "--out", str(out), "--text-column", "message", "--label-column", "kind"]) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert main(bad(tmp_path, "s.csv", "text,label\n" + "hi,a\n" * 20)) == 1
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # no temp files, nothing changed


def test_dataset_and_collate(tokenizer):
    texts = ["Every effort moves you", "hi", "a much longer message than the others, with many tokens in it"]
    ds = TextDataset(texts, [0, 1, 0], tokenizer)
    assert ds.max_length == len(tokenizer.encode(texts[2]))
    ids, labels, lengths = Collate(tokenizer.pad_id)([ds[0], ds[1]])
    assert ids.shape == (2, 4) and lengths.tolist() == [4, 1] and labels.tolist() == [0, 1]
    assert ids[0].tolist() == [6109, 3626, 6100, 345] and ids[1, 1:].eq(50256).all()
    short = TextDataset(texts, [0, 1, 0], tokenizer, max_length=3)
    ids, _, lengths = Collate(tokenizer.pad_id, pad_to=3)([short[0], short[1]])
    assert ids.shape == (2, 3) and lengths.tolist() == [3, 1]
    capped = TextDataset(texts, [0, 1, 0], tokenizer, context_length=5)
    assert capped.max_length == 5
