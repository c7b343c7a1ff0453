"""Download a file over HTTP(S) once: cached, resumed after an interruption, checked by sha256."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import UserError
from .hub import sha256_file


def cache_dir() -> Path:
    return Path(os.environ.get("GPTCLASSIFY_CACHE", Path.home() / ".cache" / "gptclassify"))


def fetch(urls: list[str], dest: Path, *, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """`dest`, downloaded from the first of `urls` that works unless already there and intact.

    A partial download is kept as `dest.part` and resumed with an HTTP Range request.
    """
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            _download(url, dest, timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        if sha256 and (actual := sha256_file(dest)) != sha256:
            dest.unlink()
            errors.append(f"{url}: sha256 {actual[:12]}… does not match the expected {sha256[:12]}…")
            continue
        return dest
    raise UserError("download failed: " + "; ".join(errors))


def _download(url: str, dest: Path, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if start and response.status != 206:  # the server ignored the Range: start again
            start = 0
        total = response.headers.get("Content-Length")
        total = int(total) + start if total else None
        with open(part, "ab" if start else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=dest.name, leave=False,
            disable=None,
        ) as bar:
            while chunk := response.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise ValueError(f"incomplete: {part.stat().st_size} of {total} bytes")
    os.replace(part, dest)
