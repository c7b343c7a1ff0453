"""A GGUF file converted once: its dequantized weights (float32 safetensors), model config and
tokenizer (tokenizer.json) kept in the cache, so later commands skip parsing the GGUF's metadata
(SmolLM2's 49,152-string vocabulary and 48,900 merges take seconds) and dequantizing it.

An entry is keyed by the GGUF's real path, size and modification time, and is a folder written
under a temporary name and renamed into place whole. Its `entry.json` holds each file's size and
sha256; an entry whose files do not match (cut short, a flipped byte) is removed and made again.
Where the cache cannot be written, the GGUF is read directly, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..download import cache_dir
from ..files import write_safetensors
from ..hub import sha256_file

FILES = ("model.safetensors", "tokenizer.json")
VERSION = 1  # bump when what an entry holds changes
_checked: dict[tuple, dict] = {}  # entries this process has checked, by their files' sizes and times


def converted_root() -> Path:
    return Path(os.environ.get("GPTCLASSIFY_CONVERTED_CACHE", cache_dir() / "converted"))


def entries() -> list[tuple[Path, int]]:
    """Every finished entry and its size in bytes (for `gptclassify cache list`)."""
    root = converted_root()
    found = [d for d in root.iterdir() if d.is_dir() and (d / "entry.json").is_file()] if root.is_dir() else []
    return [(d, sum(f.stat().st_size for f in d.iterdir() if f.is_file())) for d in sorted(found)]


def clear() -> list[tuple[Path, int]]:
    """Remove every entry and any half-built folder (`gptclassify cache clear --converted`); each
    GGUF is converted again on its next use. Returns what was removed, with sizes."""
    removed = entries()
    root = converted_root()
    for where in [w for w, _ in removed] + (sorted(root.glob(".building-*")) if root.is_dir() else []):
        shutil.rmtree(where, ignore_errors=True)
    _checked.clear()
    return removed


def entry_dir(gguf: Path) -> Path:
    real = Path(os.path.realpath(gguf))
    stat = real.stat()
    key = hashlib.sha256(f"{VERSION}|{real}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return converted_root() / f"{real.stem}-{key}"


def read_entry(gguf: Path) -> dict | None:
    """The entry's `entry.json` if every file it lists is there, whole and unchanged; else None
    (and a damaged entry is removed, so the next write makes it anew)."""
    try:
        where = entry_dir(gguf)
    except OSError:  # no such GGUF: its reader says so
        return None
    try:
        stamp = (str(where), *((f.stat().st_size, f.stat().st_mtime_ns) for f in (where / n for n in FILES)))
        if stamp in _checked:  # the weights and the tokenizer of one command check the files once
            return _checked[stamp]
        meta = json.loads((where / "entry.json").read_text())
        for name in FILES:
            path = where / name
            if path.stat().st_size != meta["files"][name]["size"] or sha256_file(path) != meta["files"][name]["sha256"]:
                raise ValueError(f"{name} does not match entry.json")
        _checked[stamp] = meta
        return meta
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or missing a file, cut short, changed
        shutil.rmtree(where, ignore_errors=True)
        return None


def write_entry(gguf: Path, state: dict[str, torch.Tensor], config: dict, tokenizer_json: str, pad_id: int) -> None:
    """Keep `state` (tied tensors once), `config` and the tokenizer for `gguf`; silently nothing
    where the cache cannot be written (the next command reads the GGUF again)."""
    try:
        where = entry_dir(gguf)
        where.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=".building-", dir=where.parent))
    except OSError:
        return
    try:
        unique = {k: v.contiguous() for k, v in state.items() if k != "out_head.weight" or not config["tie_embeddings"]}
        write_safetensors(unique, build / "model.safetensors")
        (build / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        files = {name: {"size": (build / name).stat().st_size, "sha256": sha256_file(build / name)} for name in FILES}
        meta = {"version": VERSION, "gguf": str(os.path.realpath(gguf)), "config": config, "pad_id": pad_id,
                "files": files}
        (build / "entry.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(where, ignore_errors=True)
        os.replace(build, where)
    except OSError:
        pass
    finally:
        shutil.rmtree(build, ignore_errors=True)


def read_state(gguf: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(entry_dir(gguf) / "model.safetensors"))
    if meta["config"]["tie_embeddings"]:
        state["out_head.weight"] = state["tok_emb.weight"]
    return state


def tokenizer_json_path(gguf: Path) -> Path:
    return entry_dir(gguf) / "tokenizer.json"
