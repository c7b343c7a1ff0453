"""Texts kept as files: one text per file, and for training one folder per class, named after it
(`contracts/nda/a.txt`, `contracts/lease/b.txt`), as scikit-learn's `load_files` and Keras'
`text_dataset_from_directory` read them. Files may sit deeper inside a class's folder; names
starting with a dot (`.DS_Store`, `.git/`) are skipped; symbolic links are followed; the order
is the sorted paths'. A file's
trailing blank lines and spaces are not part of its text (a text typed as an argument has none).

For training, every file is read or the folder is refused with one line naming the file:
undecodable bytes, a binary file (a PDF, a Word file), an empty text, a file outside any class
folder, a class folder with no files, a folder that cannot be read.
For prediction (`InputFolder`), every file under the folder is a text, read as it is needed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..progress import Progress
from .splits import SplitOptions, check_encoding, decode_bytes, split_frame

PROGRESS_FROM = 1000  # files: a folder this large shows its reading's progress


def text_files(folder: Path) -> list[Path]:
    """Every file under `folder`, its subfolders' too, sorted; hidden ones (and those in hidden folders)
    skipped. Symbolic links are followed (a class folder may link to where its files are kept), each
    real folder once, so a link back up the tree is not a loop; a folder that cannot be read is
    refused, not skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")

    def unreadable(error: OSError):
        raise UserError(f"{error.filename}: cannot be read ({error.strerror})")

    files, seen = [], set()
    for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # reached again through a link: its files are listed already
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(top, n) for n in names if not n.startswith(".") and Path(top, n).is_file()]
    return sorted(files)


def file_name(path: Path, folder: Path) -> str:
    """`path` under `folder`, as the CSV and prediction files write it (UTF-8)."""
    name = path.relative_to(folder).as_posix()
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system holds that are not UTF-8
        raise UserError(f"{ascii(str(path))}: a file name that is not valid UTF-8; rename it") from None
    return name


def file_text(path: Path, data: bytes, encoding: str) -> str:
    """The text of one file (its trailing blank lines and spaces dropped); a PDF, a Word file or
    any file with NUL bytes refused by name (read as latin-1, they would train on noise)."""
    wide = encoding.lower().replace("-", "").startswith(("utf16", "utf32"))  # their text holds NUL bytes
    if data.startswith(b"%PDF-") or (not wide and b"\0" in data[:8192]):
        raise UserError(f"{path}: a binary file, not text (convert PDF or Word files to text first, "
                        "e.g. with pdftotext)")
    return decode_bytes(path, data, encoding).rstrip()


def read_text_file(path: Path, data: bytes, encoding: str = "utf-8") -> str:
    text = file_text(path, data, encoding)
    if not text:
        raise UserError(f"{path}: empty text")
    return text


def read_folder(root: Path, encoding: str = "utf-8") -> tuple[pd.DataFrame, str]:
    """The texts under `root` as a frame (`text`, `label` = the class folder's name, `file` = the
    path under `root`), and a sha256 over every file's path and bytes (what `dataset.json` records)."""
    root = Path(root)
    files = text_files(root)
    loose = [p for p in files if p.parent == root]
    if loose:
        raise UserError(f"{loose[0]}: a file outside any class folder "
                        "(put each file in a folder named after its class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{root}: no class folders (one folder per class, each holding that class's files)")
    digest, rows = hashlib.sha256(), []
    progress = Progress(len(files), "files", "prepare folder", enabled=len(files) >= PROGRESS_FROM)
    for path in files:
        name, data = file_name(path, root), path.read_bytes()
        digest.update(name.encode("utf-8") + b"\0" + data + b"\0")
        rows.append({"text": read_text_file(path, data, encoding), "label": name.split("/", 1)[0], "file": name})
        progress.update(1)
    progress.close()
    empty = sorted(set(classes) - {row["label"] for row in rows})
    if empty:
        raise UserError(f"{root / empty[0]}: a class folder with no files")
    return pd.DataFrame(rows, columns=["text", "label", "file"], dtype=object), digest.hexdigest()


def prepare_folder(root: Path, options: SplitOptions, encoding: str = "utf-8"):
    """`prepare_table` for a folder of class folders: the same stratified split and checks; each
    split's CSV keeps the file each text came from (its `file` column)."""
    df, digest = read_folder(root, encoding)
    prepared = split_frame(df, labels=sorted(df["label"].unique()), options=options)
    prepared.info.update(task="single-label", source=str(root), source_sha256=digest, files=len(df))
    return prepared


class InputFolder:
    """The files under a folder as prediction input, read one at a time: iterate to get (file under
    the folder, text) pairs. Like `inputs.InputFile`: `bytes_read` and `blank` (empty files,
    skipped) say how far it got and what it skipped; `identity` what a resumed prediction checks."""

    yields_files = True

    def __init__(self, path: Path, encoding: str = "utf-8"):
        self.path, self.encoding = Path(path), check_encoding(encoding)
        self.files = text_files(self.path)
        if not self.files:
            raise UserError(f"{self.path}: no files")
        self.names = [file_name(p, self.path) for p in self.files]
        stats = [p.stat() for p in self.files]
        self.size = sum(s.st_size for s in stats)
        listing = hashlib.sha256()
        for name, s in zip(self.names, stats):
            listing.update(f"{name}\0{s.st_size}\0{s.st_mtime_ns}\0".encode("utf-8"))
        self.listing = listing.hexdigest()
        self.bytes_read, self.blank = 0, 0

    def identity(self) -> dict:
        return {"input": str(self.path.resolve()), "files": len(self.files), "bytes": self.size,
                "listing_sha256": self.listing, **({"encoding": self.encoding} if self.encoding != "utf-8" else {})}

    def __iter__(self):
        """Each pass reads the files again and counts afresh."""
        self.bytes_read, self.blank = 0, 0
        for path, name in zip(self.files, self.names):
            data = path.read_bytes()
            self.bytes_read += len(data)
            text = file_text(path, data, self.encoding)
            if text:
                yield name, text
            else:
                self.blank += 1
