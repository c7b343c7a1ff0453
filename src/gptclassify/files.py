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
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: could not write ({write_failure(e)})") from None


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
