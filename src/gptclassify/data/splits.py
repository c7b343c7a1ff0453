"""Labelled text in, reproducible train/validation/test CSV files out.

`prepare_sms_spam` reproduces the book's split row for row by default; `prepare_table` takes a
user's own CSV, TSV or JSONL file with any number of classes. Both write `train.csv`,
`validation.csv`, `test.csv` (columns `text,label`, label = class name) and `dataset.json`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..download import cache_dir, fetch
from ..errors import UserError
from ..files import atomic_path, read_json, write_json
from ..hub import sha256_file
from .tasks import TASKS, multi_label_split, parse_label_cell, regression_split, target_summary

SPLITS = ("train", "validation", "test")
SMS_URLS = [
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",  # the book's mirror
]
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"


@dataclass
class SplitOptions:
    seed: int = 123
    val_frac: float = 0.1
    test_frac: float = 0.2
    balance: str = "undersample"  # "undersample" | "none"
    split: str = "random"  # "random": the book's shuffle-and-cut | "stratified"


@dataclass
class Prepared:
    labels: list[str]
    splits: dict[str, pd.DataFrame]
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the SMS Spam Collection


def sms_source_file(source: str | None) -> Path:
    """The extracted `SMSSpamCollection`: from `source` (zip, file or URL) or the UCI download."""
    if source and not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        return _extract(path) if zipfile.is_zipfile(path) else path
    zip_path = fetch([source] if source else SMS_URLS, cache_dir() / "sms+spam+collection.zip")
    return _extract(zip_path)


def _extract(zip_path: Path) -> Path:
    out = cache_dir() / "SMSSpamCollection"
    try:
        with zipfile.ZipFile(zip_path) as z:
            data = z.read("SMSSpamCollection")
    except (zipfile.BadZipFile, KeyError, OSError, zipfile.LargeZipFile) as e:
        if zip_path.is_relative_to(cache_dir()):
            zip_path.unlink(missing_ok=True)  # do not keep a bad download in the cache
        raise UserError(f"{zip_path}: not a usable SMS Spam Collection zip ({e})") from None
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return out


def read_sms_book(path: Path) -> pd.DataFrame:
    """The book's reading: pandas' default quoting, which merges two lines (5,572 rows)."""
    return pd.read_csv(path, sep="\t", header=None, names=["label", "text"], encoding="utf-8",
                       keep_default_na=False, dtype=str)


def read_sms_exact(path: Path) -> pd.DataFrame:
    """Every line one message (5,574 rows): quoting disabled, `"` is part of the text."""
    return pd.read_csv(path, sep="\t", header=None, names=["label", "text"], encoding="utf-8",
                       quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str)


def prepare_sms_spam(source: str | None = None, *, exact: bool = False, balance: bool = True,
                     seed: int = 123) -> Prepared:
    """The book's split by default: ham undersampled to the spam count, shuffled, cut 70/10/20."""
    path = sms_source_file(source)
    digest = sha256_file(path)
    if digest != SMS_SHA256 and source is None:
        raise UserError(f"downloaded SMSSpamCollection has sha256 {digest[:12]}…, expected {SMS_SHA256[:12]}…")
    try:
        df = read_sms_exact(path) if exact else read_sms_book(path)
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: not the SMS Spam Collection's tab-separated UTF-8 format ({e})") from None
    options = SplitOptions(seed=seed, balance="undersample" if balance else "none",
                           split="stratified" if exact else "random")
    prepared = split_frame(df, labels=["ham", "spam"], options=options)
    prepared.info.update(source=str(source or SMS_URLS[0]), source_sha256=digest,
                         reading="exact" if exact else "book")
    return prepared


# ---------------------------------------------------------------- users' own files


def read_table(path: Path, text_column: str, label_column: str | None, encoding: str = "utf-8",
               task: str = "single-label", separator: str = "|", pair_column: str | None = None) -> pd.DataFrame:
    """A CSV, TSV or JSONL file (by extension) as a frame with columns `text` and `label`
    (just `text` when no label column is named; and `text_pair` with a `pair_column`), each label
    read as `task` reads it (`data/tasks.py`: a class, a sorted list of classes, a number).

    Every row is read or the file is refused with one line naming it, the line and the column:
    undecodable bytes, a row with too many or too few fields, a duplicated or missing column, an
    empty text or label, a JSON value that is not text. A UTF-8 byte-order mark and CRLF line ends
    are read as they are meant; quoted fields may hold newlines; nothing is read as NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".tab", ".jsonl", ".ndjson"):
        raise UserError(f"{path}: unknown file type {suffix!r} (expected .csv, .tsv or .jsonl)")
    text = decode_file(path, encoding)
    named = [(n, c) for n, c in (("text", text_column), ("label", label_column), ("text_pair", pair_column)) if c]
    names, columns = [n for n, _ in named], [c for _, c in named]
    if suffix in (".jsonl", ".ndjson"):
        rows = list(jsonl_rows(path, text.split("\n"), columns, lists_in=label_column if task == "multi-label" else None))
        if not rows:
            raise UserError(f"{path}: no rows")
    else:
        # The csv module refuses fields over 131,072 characters by default; a long e-mail is longer.
        # The whole file is in memory already, so a field may be as long as the file.
        csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
        rows = list(delimited_rows(path, io.StringIO(text, newline=""), "," if suffix == ".csv" else "\t", columns))
    for line, row in rows:
        for name, column, value in zip(names, columns, row):
            if name != "label" and not value.strip():
                raise UserError(f"{path}: line {line}, column {column!r}: empty text")
        if label_column is not None:
            row[1] = parse_label_cell(path, line, label_column, row[1], task, separator)
    return pd.DataFrame([row for _, row in rows], columns=names, dtype=object)


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file (LF or CRLF), every one, blank ones too; the newline at the very end
    does not start another. Undecodable bytes are refused with the line they are on."""
    return split_lines(decode_file(path, encoding))


def split_lines(text: str) -> list[str]:
    """Lines ended by LF or CRLF (not `str.splitlines`, which also breaks at U+2028, form feeds and
    other characters a text may hold); a newline at the very end does not start another line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def decode_file(path: Path, encoding: str) -> str:
    return decode_bytes(path, path.read_bytes(), encoding)


def check_encoding(encoding: str) -> str:
    """`encoding`'s canonical name (utf-8, latin-1 as iso8859-1...), or a one-line refusal."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}") from None


def decode_bytes(path: Path, data: bytes, encoding: str) -> str:
    """`data`, the bytes of `path`, as text; undecodable bytes refused naming the file and line."""
    if check_encoding(encoding) == "utf-8" and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a byte-order mark, as spreadsheet programs write
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not valid {encoding} text (byte {data[e.start]:#04x} at offset "
                        f"{e.start}; pass --encoding, e.g. latin-1)") from None


def delimited_rows(path: Path, lines, delimiter: str, columns: list[str]):
    """(line number, [values of `columns`]) per record of CSV/TSV `lines` (an iterable of strings
    with their line ends, e.g. a file read as it goes)."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: cannot parse: the file is empty")
        where = column_positions(path, header, columns)
        line = reader.line_num
        for record in reader:
            if record and len(record) != len(header):
                raise UserError(f"{path}: line {line + 1}: {len(record)} fields, but the header has {len(header)}")
            if record:
                yield line + 1, [record[i] for i in where]
            line = reader.line_num
    except csv.Error as e:
        raise UserError(f"{path}: line {reader.line_num}: cannot parse ({e})") from None


def column_positions(path: Path, header: list[str], columns: list[str]) -> list[int]:
    for column in columns:
        if header.count(column) > 1:
            raise UserError(f"{path}: line 1: column {column!r} appears {header.count(column)} times")
        if column not in header:
            raise UserError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
    return [header.index(c) for c in columns]


def jsonl_rows(path: Path, lines, columns: list[str], lists_in: str | None = None):
    """(line number, [values of `columns`]) per object of JSONL `lines` (split at LF only: not
    splitlines(), since U+2028 may sit inside a string). Column `lists_in` may hold a list of texts."""
    for line, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {line}, column {e.colno}: cannot parse as JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {line}: expected a JSON object, got {type(record).__name__}")
        values = []
        for column in columns:
            if column not in record:
                raise UserError(f"{path}: line {line}: no {column!r} (keys: {', '.join(map(str, record))})")
            value = record[column]
            if column == lists_in and isinstance(value, list) and all(isinstance(v, str) for v in value):
                values.append(value)
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise UserError(f"{path}: line {line}, column {column!r}: expected text, got {json.dumps(value)[:40]}")
            values.append(value if isinstance(value, str) else json.dumps(value))
        yield line, values


def prepare_table(path: Path, text_column: str, label_column: str, *, options: SplitOptions,
                  encoding: str = "utf-8", task: str = "single-label", separator: str = "|",
                  pair_column: str | None = None) -> Prepared:
    df = read_table(path, text_column, label_column, encoding, task, separator, pair_column)
    if task == "multi-label":
        prepared = split_multi_label(df, options, separator)
    elif task == "regression":
        prepared = split_regression(df, options)
    else:
        prepared = split_frame(df, labels=sorted(df["label"].unique()), options=options)
    prepared.info.update(task=task, source=str(path), source_sha256=sha256_file(path),
                         text_column=text_column, label_column=label_column, text_pair_column=pair_column)
    return prepared


def split_multi_label(df: pd.DataFrame, options: SplitOptions, separator: str) -> Prepared:
    labels = sorted({label for names in df["label"] for label in names})
    if not labels:
        raise UserError("no text carries a label: a multi-label file needs at least one")
    check_fractions(options)
    splits, notes = multi_label_split(df, labels, options.val_frac, options.test_frac, options.seed)
    counts = {name: {label: int(sum(label in names for names in part["label"])) for label in labels}
              for name, part in splits.items()}
    for part in splits.values():
        part["label"] = [separator.join(names) for names in part["label"]]
    info = {"labels": labels, "label_separator": separator, "counts": counts, "notes": notes,
            "empty_label_sets": {name: int((part["label"] == "").sum()) for name, part in splits.items()},
            "duplicates": duplicate_report(df, splits), "options": asdict(options)}
    return Prepared(labels=labels, splits=splits, info=info)


def split_regression(df: pd.DataFrame, options: SplitOptions) -> Prepared:
    check_fractions(options)
    if len(df) < 10:
        raise UserError(f"need at least 10 rows to split a regression target, found {len(df)}")
    df = df.assign(label=df["label"].astype(float))
    splits = regression_split(df, options.val_frac, options.test_frac, options.seed)
    info = {"labels": ["value"], "target": {name: target_summary(part["label"]) for name, part in splits.items()},
            "duplicates": duplicate_report(df, splits), "options": asdict(options)}
    for part in splits.values():
        part["label"] = [repr(float(v)) for v in part["label"]]
    return Prepared(labels=["value"], splits=splits, info=info)


def check_fractions(options: SplitOptions) -> None:
    if not 0 < options.val_frac < 1 or not 0 < options.test_frac < 1 or options.val_frac + options.test_frac >= 1:
        raise UserError("validation and test fractions must be in (0, 1) and leave room for training")


# ---------------------------------------------------------------- balancing and splitting


def split_frame(df: pd.DataFrame, labels: list[str], options: SplitOptions) -> Prepared:
    unknown = set(df["label"]) - set(labels)
    if unknown:
        raise UserError(f"unexpected labels: {', '.join(sorted(unknown))}")
    counts = df["label"].value_counts()
    present = [label for label in labels if counts.get(label, 0) > 0]
    if len(present) < 2:
        raise UserError(f"need at least two classes, found {len(present)} ({', '.join(present) or 'none'})")
    check_fractions(options)
    if options.balance == "undersample":
        df = undersample(df, labels, options.seed)
    if options.split == "random":
        splits = book_split(df, 1 - options.val_frac - options.test_frac, options.val_frac, options.seed)
    else:
        splits = stratified_split(df, labels, options)
    for name, part in splits.items():
        missing = [label for label in present if not (part["label"] == label).any()]
        if missing:
            raise UserError(f"the {name} split has no example of class {missing[0]!r}; "
                            "add data or use larger validation/test fractions")
    info = {
        "labels": labels,
        "counts": {name: {label: int((part["label"] == label).sum()) for label in labels}
                   for name, part in splits.items()},
        "duplicates": duplicate_report(df, splits),
        "options": asdict(options),
    }
    return Prepared(labels=labels, splits=splits, info=info)


def undersample(df: pd.DataFrame, labels: list[str], seed: int) -> pd.DataFrame:
    """Every class cut to the smallest's size, as the book's `create_balanced_dataset` does."""
    smallest = min(int((df["label"] == label).sum()) for label in labels if (df["label"] == label).any())
    parts = []
    for label in labels:
        part = df[df["label"] == label]
        parts.append(part.sample(smallest, random_state=seed) if len(part) > smallest else part)
    return pd.concat(parts)


def book_split(df: pd.DataFrame, train_frac: float, val_frac: float, seed: int) -> dict[str, pd.DataFrame]:
    """The book's `random_split`: shuffle with the seed, then cut."""
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    val_end = train_end + int(len(df) * val_frac)
    return {"train": df[:train_end], "validation": df[train_end:val_end], "test": df[val_end:]}


def stratified_split(df: pd.DataFrame, labels: list[str], options: SplitOptions) -> dict[str, pd.DataFrame]:
    """Each class cut by the same fractions, then each split shuffled."""
    rng = np.random.default_rng(options.seed)
    parts: dict[str, list] = {name: [] for name in SPLITS}
    for label in labels:
        rows = df[df["label"] == label]
        order = rng.permutation(len(rows))
        n_test = int(round(len(rows) * options.test_frac))
        n_val = int(round(len(rows) * options.val_frac))
        parts["test"].append(rows.iloc[order[:n_test]])
        parts["validation"].append(rows.iloc[order[n_test:n_test + n_val]])
        parts["train"].append(rows.iloc[order[n_test + n_val:]])
    return {name: pd.concat(p).sample(frac=1, random_state=options.seed).reset_index(drop=True)
            for name, p in parts.items()}


def duplicate_report(df: pd.DataFrame, splits: dict[str, pd.DataFrame]) -> dict:
    """Texts that occur more than once, and texts shared between splits (leakage)."""
    key = lambda part: part["text"] + "\0" + part["text_pair"] if "text_pair" in part else part["text"]  # noqa: E731
    train = set(key(splits["train"]))
    return {
        "duplicate_texts": int(key(df).duplicated().sum()),
        "validation_texts_in_train": int(key(splits["validation"]).isin(train).sum()),
        "test_texts_in_train": int(key(splits["test"]).isin(train).sum()),
    }


# ---------------------------------------------------------------- files


def write_prepared(prepared: Prepared, out: Path, params: dict) -> None:
    """The three CSV files and dataset.json, each written whole or not at all."""
    for name, part in prepared.splits.items():
        with atomic_path(out / f"{name}.csv") as tmp:
            # Every field quoted: unquoted, a lone carriage return inside a text would read back as a line end.
            columns = ["text", "label", *(c for c in ("text_pair", "file") if c in part)]
            part[columns].to_csv(tmp, index=False, encoding="utf-8", quoting=csv.QUOTE_ALL)
    write_json(out / "dataset.json", {**prepared.info, "parameters": params})


def read_split(data_dir: Path, split: str) -> pd.DataFrame:
    path = Path(data_dir) / f"{split}.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found (make it with `gptclassify prepare`)")
    try:
        df = pd.read_csv(path, encoding="utf-8", keep_default_na=False, dtype=str)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: unreadable ({str(e).splitlines()[0][:100]})") from None
    if list(df.columns[:2]) != ["text", "label"]:
        raise UserError(f"{path}: expected columns text,label")
    return df


def dataset_info(data_dir: Path) -> tuple[str, list[str], str]:
    """The task, the labels and (multi-label) the label separator that `prepare` recorded."""
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{data_dir}: no dataset.json (make the directory with `gptclassify prepare`)")
    info = read_json(path)
    task = info.get("task", "single-label")
    if task not in TASKS:
        raise UserError(f"{path}: unknown task {task!r} (known: {', '.join(TASKS)})")
    return task, list(info["labels"]), str(info.get("label_separator", "|"))


def dataset_labels(data_dir: Path) -> list[str]:
    return dataset_info(data_dir)[1]


def load_data_split(data_dir: Path, split: str, labels: list[str], task: str = "single-label",
                    separator: str = "|") -> tuple[list[str], list]:
    """Texts and targets of one split: class ids in the order of `labels` (a model's), 0/1 rows
    over `labels` (multi-label), or numbers (regression)."""
    df = read_split(data_dir, split)
    where = f"{data_dir}/{split}.csv"
    texts = list(zip(df["text"], df["text_pair"])) if "text_pair" in df else df["text"].tolist()
    if task == "regression":
        return texts, [parse_label_cell(where, i + 2, "label", v, task, separator) for i, v in enumerate(df["label"])]
    label2id = {label: i for i, label in enumerate(labels)}
    if task == "multi-label":
        sets = [[n for n in v.split(separator) if n] for v in df["label"]]
        unknown = sorted({n for names in sets for n in names} - set(label2id))
        if unknown:
            raise UserError(f"{where}: label {unknown[0]!r} is not among the model's labels ({', '.join(labels)})")
        rows = [[0.0] * len(labels) for _ in sets]
        for row, names in zip(rows, sets):
            for n in names:
                row[label2id[n]] = 1.0
        return texts, rows
    unknown = sorted(set(df["label"]) - set(label2id))
    if unknown:
        raise UserError(f"{where}: label {unknown[0]!r} is not among the model's labels ({', '.join(labels)})")
    return texts, [label2id[label] for label in df["label"]]
