"""Hostile or broken input never crashes anything: the file readers and the tokenizers' front door,
tried with property-based tests (hypothesis, fixed seed, bounded examples) and with each broken
file a user might bring. A file is read correctly or refused with one line naming the file, the
line and the column; no row is dropped without a word."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptclassify import UserError
from gptclassify.cli import main
from gptclassify.data.inputs import InputFile
from gptclassify.data.splits import read_lines, read_table

CI = settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Anything a UTF-8 file can hold (no lone surrogates), that is not blank.
field = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).filter(lambda t: t.strip())


def write(path, rows, fmt, header=("text", "label"), bom=False, crlf=False):
    if fmt == "jsonl":
        out = "".join(json.dumps(dict(zip(header, r)), ensure_ascii=False) + ("\r\n" if crlf else "\n") for r in rows)
    else:
        buffer = io.StringIO(newline="")
        # With LF line ends a lone CR must be quoted to stay data, so that variant quotes every field.
        writer = csv.writer(buffer, delimiter="," if fmt == "csv" else "\t", lineterminator="\r\n" if crlf else "\n",
                            quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(rows)
        out = buffer.getvalue()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.encode("utf-8"))
    return path


@CI
@given(rows=st.lists(st.tuples(field, field), min_size=1, max_size=15), fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
       bom=st.booleans(), crlf=st.booleans())
def test_every_row_is_read_back_exactly(tmp_path_factory, rows, fmt, bom, crlf):
    path = write(tmp_path_factory.mktemp("t") / f"data.{fmt}", rows, fmt, bom=bom, crlf=crlf)
    df = read_table(path, "text", "label")
    assert list(zip(df["text"], df["label"])) == rows


@CI
@given(rows=st.lists(st.tuples(field, st.sampled_from(["ham", "spam", "NA", "null", "nan", "0", "1"])),
                     min_size=1, max_size=30))
def test_prepared_splits_keep_every_text(tmp_path_factory, rows):
    """`prepare csv` then the training reader: every text (quotes, CR, LF, NUL, NaN-like words)
    arrives as it was, none lost, whatever the labels look like."""
    tmp = tmp_path_factory.mktemp("p")
    labels = sorted({label for _, label in rows} | {"ham", "spam"})
    rows = rows + [(f"extra text {i}", label) for label in labels for i in range(10)]  # every class in every split
    write(tmp / "in.csv", rows, "csv")
    assert main(["prepare", "csv", str(tmp / "in.csv"), "--out", str(tmp / "out")]) == 0
    from gptclassify.data.splits import read_split

    got = []
    for split in ("train", "validation", "test"):
        df = read_split(tmp / "out", split)
        got += list(zip(df["text"], df["label"]))
    assert sorted(got) == sorted(rows)


@CI
@given(lines=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")), max_size=20),
       crlf=st.booleans())
def test_plain_lines_line_up_with_the_file(tmp_path_factory, lines, crlf):
    lines = [line.removesuffix("\r") for line in lines]
    path = tmp_path_factory.mktemp("l") / "texts.txt"
    path.write_bytes("".join(line + ("\r\n" if crlf else "\n") for line in lines).encode("utf-8"))
    assert read_lines(path) == lines


@pytest.fixture(scope="module")
def tokenizers(tokenizer):
    from gptclassify.weights.fetch import fetch_smollm2_gguf
    from gptclassify.weights.gguf import tokenizer_from_gguf

    return [tokenizer, tokenizer_from_gguf(fetch_smollm2_gguf())]


@CI
@given(text=st.text(max_size=200))  # lone surrogates, NUL, control characters, anything
def test_the_tokenizers_take_any_string(tokenizers, text):
    for tok in tokenizers:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert ids == tok.encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


def test_a_10_mb_text_costs_what_its_first_tokens_cost(tokenizer):
    import time

    huge = "free entry in a weekly competition " * 300_000  # 10.5 MB
    started = time.perf_counter()
    ids = tokenizer.encode(huge, max_length=120)
    assert time.perf_counter() - started < 1.0
    assert ids[:120] == tokenizer.encode(huge[:10_000])[:120]


BROKEN = [
    ("bad.csv", b"text,label\nfine,ham\n\xff\xfe oops,spam\n", "line 3: not valid utf-8 text"),
    ("fields.csv", b"text,label\nfine,ham\ntoo,many,fields\n", "line 3: 3 fields, but the header has 2"),
    ("dup.csv", b"text,label,text\na,ham,b\n", "line 1: column 'text' appears 2 times"),
    ("missing.csv", b"message,label\na,ham\n", "no column 'text' (columns: message, label)"),
    ("nolabel.csv", b"text,label\na,ham\nb,\n", "line 3, column 'label': empty label"),
    ("notext.tsv", b"text\tlabel\n  \tham\n", "line 2, column 'text': empty text"),
    ("quote.csv", b'text,label\n"unterminated,ham\n', "cannot parse"),
    ("empty.csv", b"", "the file is empty"),
    ("obj.jsonl", b'{"text": "a", "label": "ham"}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
    ("null.jsonl", b'{"text": "a", "label": null}\n', "line 1, column 'label': expected text, got null"),
    ("nokey.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "line 2: no 'label' (keys: text)"),
    ("json.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", \n', "line 2, column 15: cannot parse as JSON"),
]


@pytest.mark.parametrize("name, content, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_files_are_refused_with_file_line_and_column(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=None) as raised:
        read_table(path, "text", "label")
    assert str(raised.value).startswith(str(path)) and message in str(raised.value), str(raised.value)
    assert main(["prepare", "csv", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_files_read_as_meant(tmp_path):
    """A byte-order mark, CRLF, quoted newlines, NaN-like words and numeric labels are data."""
    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label\r\n"two\r\nlines",1\r\nNA,0\r\nnull,1\r\n')
    df = read_table(path, "text", "label")
    assert df["text"].tolist() == ["two\r\nlines", "NA", "null"] and df["label"].tolist() == ["1", "0", "1"]
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b\\u2028c", "label": 2.5}\n', encoding="utf-8")
    df = read_table(path, "text", "label")
    assert df["text"].tolist() == ["a", "b\u2028c"] and df["label"].tolist() == ["1", "2.5"]


@CI
@given(rows=st.lists(st.tuples(field, field), min_size=1, max_size=12),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]), fmt=st.sampled_from(["csv", "jsonl"]))
@example(rows=[("\u010a\u0a0a \u2028", "\u0a01")], encoding="utf-16-le", fmt="csv")
def test_a_prediction_input_in_any_unicode_encoding_streams_the_texts_written(tmp_path_factory, rows, encoding, fmt):
    """`predict --input --encoding`: a file is read a line of bytes at a time, and in UTF-16 or UTF-32
    a newline byte falls inside characters (U+010A is 0A 01 in UTF-16-LE); the texts still arrive
    as written, pairs too."""
    tmp = tmp_path_factory.mktemp("e")
    utf8 = write(tmp / f"in.{fmt}", rows, fmt, header=("text", "other"))
    other = tmp / f"in-{encoding}.{fmt}"
    other.write_bytes(utf8.read_bytes().decode("utf-8").encode(encoding))
    assert list(InputFile(other, "text", "other", encoding)) == [tuple(r) for r in rows]


def test_a_prediction_input_in_latin_1_needs_encoding_and_says_so(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("caf\u00e9 au lait\nna\u00efve\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"in.txt: line 1: not valid utf-8 text \(byte 0xe9; pass --encoding"):
        list(InputFile(path))
    assert list(InputFile(path, encoding="latin-1")) == ["caf\u00e9 au lait", "na\u00efve"]
    with pytest.raises(UserError, match="unknown encoding 'klingon'"):
        InputFile(path, encoding="klingon")


# ---------------------------------------------------------------- the label shapes' columns

label_name = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="|"), min_size=1,
                     max_size=20).filter(lambda t: t.strip() == t and t)


@CI
@given(rows=st.lists(st.tuples(field, st.lists(label_name, max_size=3, unique=True)), min_size=1, max_size=15),
       fmt=st.sampled_from(["csv", "jsonl"]))
def test_label_sets_and_text_pairs_are_read_back_exactly(tmp_path_factory, rows, fmt):
    """Any label names (quotes, commas, newlines, NaN-like words), any texts: a set of labels and a
    pair of texts arrive as written, the set sorted, an empty set kept."""
    tmp = tmp_path_factory.mktemp("s")
    as_cell = (lambda labels: labels) if fmt == "jsonl" else "|".join
    path = write(tmp / f"sets.{fmt}", [(t, as_cell(labels)) for t, labels in rows], fmt)
    df = read_table(path, "text", "label", task="multi-label")
    assert list(df["text"]) == [t for t, _ in rows] and [list(x) for x in df["label"]] == [sorted(x) for _, x in rows]
    pairs = write(tmp / f"pairs.{fmt}", [(t, t[::-1] or "x", "same") for t, _ in rows], fmt,
                  header=("text", "other", "label"))
    df = read_table(pairs, "text", "label", pair_column="other")
    assert list(zip(df["text"], df["text_pair"])) == [(t, t[::-1] or "x") for t, _ in rows]


BROKEN_SHAPES = [
    ("word.csv", b"text,label\na,1\nb,high\n", ["--task", "regression"], "line 3, column 'label': not a number: 'high'"),
    ("nan.csv", b"text,label\na,1\nb,nan\n", ["--task", "regression"], "line 3, column 'label': not a finite number"),
    ("inf.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": "-inf"}\n', ["--task", "regression"],
     "line 2, column 'label': not a finite number"),
    ("null.jsonl", b'{"text": "a", "label": ["x", null]}\n', ["--task", "multi-label"],
     "line 1, column 'label': expected text, got [\"x\", null]"),
    ("sep.jsonl", b'{"text": "a", "label": ["x|y"]}\n', ["--task", "multi-label"], "line 1, column 'label'"),
    ("pair.csv", b"text,other,label\na,,x\nb,c,y\n", ["--text-pair-column", "other"], "line 2, column 'other': empty text"),
    ("nopair.csv", b"text,label\na,x\n", ["--text-pair-column", "other"], "no column 'other' (columns: text, label)"),
]


@pytest.mark.parametrize("name, content, args, message", BROKEN_SHAPES, ids=[b[0] for b in BROKEN_SHAPES])
def test_broken_label_shapes_are_refused_with_file_line_and_column(tmp_path, capsys, name, content, args, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["prepare", "csv", str(path), *args, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "out").exists()
