"""The frozen pass's output kept on disk, so that later runs on the same data and model skip it.

An entry is a folder under `<cache>/features/` named by the sha256 of everything that determines
the features: the frozen layers' weights (hashed as loaded), every split's token ids (so the
tokenizer, the data files, max_length and truncation), the pad token and width, the first
trainable block, the prefix's precision, the process's share under torchrun and the PyTorch
version. Training settings (rate, epochs, seed, head, early stopping) are not in the key.

    <key>/meta.json         what the entry holds and each file's size and sha256 (written last)
    <key>/<split>.bin       the split's hidden states, one row per token position (float32 or bfloat16)
    <key>/<split>.widths    int64 positions per example

An entry is built in a `.building-*` folder and renamed into place when whole, and every file is
checked against meta.json's size and sha256 before use: a damaged or partial entry is removed and
built again, never read. Least recently used entries go first when the cache passes its limit
(`GPTCLASSIFY_FEATURE_CACHE_GB`, default 20).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..download import cache_dir
from ..errors import UserError, env_number
from ..files import read_json, write_json
from ..hub import sha256_file

FORMAT = 1
DEFAULT_LIMIT_GB = 20.0


def cache_root() -> Path:
    """`GPTCLASSIFY_FEATURE_CACHE`, else `features/` in the download cache (~/.cache/gptclassify)."""
    return Path(os.environ.get("GPTCLASSIFY_FEATURE_CACHE", cache_dir() / "features"))


def limit_bytes() -> int:
    return int(env_number("GPTCLASSIFY_FEATURE_CACHE_GB", DEFAULT_LIMIT_GB, "a number of gigabytes") * 1e9)


def hash_tensors(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in the order given."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def hash_token_ids(encoded: list[list[int]]) -> str:
    """sha256 of a split's token ids, example by example (lengths included)."""
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    h = hashlib.sha256(lengths.tobytes())
    h.update(np.fromiter((t for e in encoded for t in e), dtype=np.int64, count=int(lengths.sum())).tobytes())
    return h.hexdigest()


def entry_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True).encode()).hexdigest()


def _np_dtype(dtype: str):
    return np.uint16 if dtype == "bfloat16" else np.float32  # bfloat16 travels as its 16 bits


def map_features(path: Path, positions: int, dim: int, dtype: str, mode: str) -> tuple[torch.Tensor, np.ndarray]:
    """A (positions, dim) tensor backed by the file (copy-on-write when only read), and its array."""
    if positions == 0:
        return torch.empty(0, dim, dtype=getattr(torch, dtype)), np.empty(0)
    array = np.memmap(path, dtype=_np_dtype(dtype), mode=mode, shape=(positions, dim))
    tensor = torch.from_numpy(array)
    return (tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor), array


@dataclass
class Entry:
    path: Path
    meta: dict

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def nbytes(self) -> int:
        return sum(f["bytes"] for f in self.meta.get("files", {}).values())

    def last_used(self) -> float:
        used = self.path / "last-used"
        return used.stat().st_mtime if used.exists() else (self.path / "meta.json").stat().st_mtime

    def touch(self) -> None:
        (self.path / "last-used").touch()


def open_entry(key: str) -> tuple[Entry | None, str | None]:
    """The entry for `key` when it is there and whole; otherwise None and, when something was
    there but damaged (and is now removed), why."""
    path = cache_root() / key
    if not path.exists():
        return None, None
    problem = check_entry(path)
    if problem is None:
        return Entry(path, read_json(path / "meta.json")), None
    shutil.rmtree(path, ignore_errors=True)
    return None, problem


def check_entry(path: Path) -> str | None:
    """Why the entry at `path` cannot be used, or None when every file is as meta.json says."""
    try:
        meta = read_json(path / "meta.json", max_bytes=1 << 20)
        files = meta["files"]
        for name, expected in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != expected["bytes"]:
                return f"{name} has {f.stat().st_size:,} bytes, not {expected['bytes']:,}"
            if sha256_file(f) != expected["sha256"]:
                return f"{name} does not match its sha256"
    except (UserError, KeyError, TypeError, OSError) as e:
        return f"meta.json unreadable ({e})"
    return None


def load_entry(entry: Entry, splits: list[str]) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Each split's (flat features, widths), memory-mapped from the entry's files."""
    meta, out = entry.meta, {}
    for split in splits:
        widths = np.fromfile(entry.path / f"{split}.widths", dtype=np.int64).tolist()
        flat, _ = map_features(entry.path / f"{split}.bin", sum(widths), meta["dim"], meta["dtype"], "c")
        out[split] = (flat, widths)
    entry.touch()
    return out


class EntryWriter:
    """Builds an entry in a private folder; `finish()` checksums it and renames it into place."""

    def __init__(self, key: str, meta: dict):
        self.root = cache_root()
        self.root.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.root)
        self.key, self.meta, self.arrays = key, {**meta, "format": FORMAT, "files": {}}, []
        self.path = self.root / f".building-{key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        self.path.mkdir()

    def features(self, split: str, widths: list[int], dim: int, dtype: str) -> torch.Tensor:
        """The file-backed (positions, dim) tensor the frozen pass writes `split` into."""
        np.asarray(widths, dtype=np.int64).tofile(self.path / f"{split}.widths")
        positions = int(sum(widths))
        nbytes = positions * dim * np.dtype(_np_dtype(dtype)).itemsize
        with open(self.path / f"{split}.bin", "wb") as f:
            try:  # every block reserved now: a full disk is an error here, not a crash mid-pass
                if nbytes:
                    os.posix_fallocate(f.fileno(), 0, nbytes)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                f.truncate(nbytes)  # a file system that cannot reserve space
        tensor, array = map_features(self.path / f"{split}.bin", positions, dim, dtype, "r+")
        self.arrays.append(array)
        return tensor

    def finish(self) -> Entry | None:
        """Flush, checksum and publish; None when another process published the same key first."""
        for array in self.arrays:
            if isinstance(array, np.memmap):
                array.flush()
        for f in sorted(self.path.iterdir()):
            self.meta["files"][f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
            with open(f, "rb+") as handle:
                os.fsync(handle.fileno())
        self.meta["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(self.path / "meta.json", self.meta)
        final = self.root / self.key
        try:
            os.rename(self.path, final)
        except OSError:  # the same entry was published meanwhile
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        entry = Entry(final, self.meta)
        entry.touch()
        return entry

    def abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned(root: Path) -> None:
    """Folders of builds whose process is gone (killed mid-pass) are removed."""
    for path in root.glob(".building-*"):
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def entries() -> list[Entry]:
    root = cache_root()
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not (path / "meta.json").is_file():
            continue
        try:
            out.append(Entry(path, read_json(path / "meta.json", max_bytes=1 << 20)))
        except UserError:
            out.append(Entry(path, {}))
    return out


def prune(keep: tuple[str | None, ...] = (), limit: int | None = None) -> list[Entry]:
    """Remove least recently used entries (never those in `keep`) until the cache fits its limit."""
    limit = limit_bytes() if limit is None else limit
    found = sorted(entries(), key=Entry.last_used)
    total, removed = sum(e.nbytes for e in found), []
    for e in found:
        if total <= limit:
            break
        if e.key in keep:
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        total -= e.nbytes
        removed.append(e)
    return removed


def clear(keys: list[str]) -> list[Entry]:
    """Remove the entries whose key starts with one of `keys` (all entries when empty)."""
    chosen = [e for e in entries() if not keys or any(e.key.startswith(k) for k in keys)]
    unknown = [k for k in keys if not any(e.key.startswith(k) for e in chosen)]
    if unknown:
        raise UserError(f"no feature cache entry starts with {', '.join(unknown)} (see `gptclassify cache list`)")
    for e in chosen:
        shutil.rmtree(e.path, ignore_errors=True)
    if not keys and cache_root().is_dir():
        remove_abandoned(cache_root())
    return chosen
