"""Atomic file writes: a finished file is either the old one or the new one, never half of each.
And the reads that go with them, each failing with one line that names the file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False):
    """Yield a new directory beside `path`; on success it becomes `path` (an old one, with
    `overwrite`, is moved aside first and then removed), so `path` is never half written. A
    non-empty `path` without `overwrite` is refused in one line before anything is written."""
    import shutil

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"{path}: not empty; choose another directory or replace it with --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        old = path.parent / f".{path.name}.{tmp.name.rsplit('.', 2)[-2]}.old"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path, text: str) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: could not write ({write_failure(e)})") from None


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


MAX_JSON_BYTES = 16 << 20  # a run's JSON files are far smaller; a larger one is not ours


def read_json(path, max_bytes: int | None = None) -> dict:
    """A JSON object from a file, or a one-line error naming it."""
    path = Path(path)
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise UserError(f"{path}: {path.stat().st_size:,} bytes, over the {max_bytes:,} a file of this kind may have")
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def save_safetensors(tensors: dict, path, metadata: dict[str, str] | None = None) -> None:
    try:
        with atomic_path(path) as tmp:
            write_safetensors(tensors, tmp, metadata)
    except OSError as e:
        raise UserError(f"{path}: could not write ({write_failure(e)})") from None


SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def write_safetensors(tensors: dict, path, metadata: dict[str, str] | None = None) -> None:
    """The safetensors format (an 8-byte header length, a JSON header, the raw bytes), written one
    tensor at a time: `safetensors.torch.save_file` first copies every tensor into one buffer, a
    second copy of a whole model in memory. safetensors reads them back (tests/test_files.py)."""
    import torch

    header, offset = {"__metadata__": metadata} if metadata else {}, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[str(t.dtype).removeprefix("torch.")], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little") + encoded)
        for t in tensors.values():
            if t.numel():
                out.write(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))


def write_failure(e: Exception) -> str:
    """Why a write failed, in a few words: the OS's own, such as "No space left on device", where there is one."""
    text = str(e)
    for reason in ("No space left on device", "File too large", "Permission denied", "Disk quota exceeded",
                   "Read-only file system"):
        if reason in text or getattr(e, "strerror", None) == reason:
            return reason
    return getattr(e, "strerror", None) or text.splitlines()[0][:120]


def load_safetensors(path) -> dict:
    """Tensors of a safetensors file (no pickle, nothing executed), or a one-line error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"{path}: not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file, corrupt or unreadable "
                        f"({str(e).splitlines()[0][:100]})") from None


def safetensors_names(path) -> list[str]:
    """The tensor names in a safetensors file's header (the tensors are not read), or a one-line error."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise UserError(f"{path}: not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file, corrupt or unreadable "
                        f"({str(e).splitlines()[0][:100]})") from None
