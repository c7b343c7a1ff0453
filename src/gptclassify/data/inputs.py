"""A prediction input file read as it is needed, in constant memory: one text per non-blank line of
a text file, or one column of a CSV, TSV or JSONL file (the same readers, and the same one-line
refusals naming file, line and column, as `prepare`)."""

from __future__ import annotations

import codecs
import csv
import sys
from pathlib import Path

from .splits import check_encoding, delimited_rows, jsonl_rows
from ..errors import UserError

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson")


class InputFile:
    """Iterate to get the texts; `bytes_read` and `blank` say how far it got and what it skipped."""

    def __init__(self, path: Path, text_column: str | None = None, pair_column: str | None = None,
                 encoding: str = "utf-8"):
        self.path, self.text_column, self.pair_column = Path(path), text_column, pair_column
        self.encoding = check_encoding(encoding)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file")
        self.suffix = self.path.suffix.lower()
        if self.suffix in TABLE_SUFFIXES and not text_column:
            raise UserError(f"{self.path}: name the column of texts with --text-column")
        if pair_column and self.suffix not in TABLE_SUFFIXES:
            raise UserError(f"{self.path}: pairs come in two columns of a CSV, TSV or JSONL file")
        stat = self.path.stat()
        self.size, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        self.bytes_read, self.blank = 0, 0

    def identity(self) -> dict:
        """What must not change for an interrupted prediction to be continued."""
        return {"input": str(self.path.resolve()), "bytes": self.size, "mtime_ns": self.mtime_ns,
                "text_column": self.text_column, **({"text_pair_column": self.pair_column} if self.pair_column else {}),
                **({"encoding": self.encoding} if self.encoding != "utf-8" else {})}

    def lines(self):
        """Decoded lines with their line ends (a byte-order mark at the start is dropped). The file is
        read a line of bytes at a time; in UTF-16 a newline byte may fall inside a character, and the
        incremental decoder keeps the part it has not decoded yet."""
        codec = "utf-8-sig" if self.encoding == "utf-8" else self.encoding
        decoder, pending, number = codecs.getincrementaldecoder(codec)(), "", 1
        with open(self.path, "rb") as f:
            for raw in f:
                self.bytes_read += len(raw)
                try:
                    pending += decoder.decode(raw)
                except UnicodeDecodeError as e:
                    raise UserError(f"{self.path}: line {number}: not valid {self.encoding} "
                                    f"text (byte {e.object[e.start]:#04x}; pass --encoding, e.g. latin-1)") from None
                while "\n" in pending:
                    line, pending = pending.split("\n", 1)
                    number += 1
                    yield line + "\n"
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending

    def __iter__(self):
        columns = [c for c in (self.text_column, self.pair_column) if c]
        if self.suffix in (".jsonl", ".ndjson"):
            rows = jsonl_rows(self.path, (line.rstrip("\n") for line in self.lines()), columns)
        elif self.suffix in TABLE_SUFFIXES:
            csv.field_size_limit(sys.maxsize >> 1)  # a text may be as long as the file
            rows = delimited_rows(self.path, self.lines(), "," if self.suffix == ".csv" else "\t", columns)
        else:
            for line in self.lines():
                text = line.removesuffix("\n").removesuffix("\r")
                if text.strip():
                    yield text
                else:
                    self.blank += 1
            return
        for line, values in rows:
            for column, text in zip(columns, values):
                if not text.strip():
                    raise UserError(f"{self.path}: line {line}, column {column!r}: empty text")
            yield tuple(values) if self.pair_column else values[0]
