"""Files from the Hugging Face hub, through `huggingface_hub` (its cache, resume and progress bar),
with the sha256 check that its plain-HTTP path leaves out, and errors a person can act on."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import UserError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_file(repo_id: str, filename: str, *, cache_dir=None, endpoint: str | None = None,
             revision: str | None = None, required: bool = True) -> Path | None:
    """Local path of `filename` in `repo_id`, downloading it once into the hub cache.

    A large (LFS) file's cache name is its sha256: a download that does not match it is removed
    from the cache and reported. With `required=False` a file the repo lacks gives None.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    where = f"{(endpoint or os.environ.get('HF_ENDPOINT') or 'https://huggingface.co').rstrip('/')}/{repo_id}"
    try:
        path = hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint, revision=revision)
    except RemoteEntryNotFoundError:
        if not required:
            return None
        raise UserError(f"{where} has no file {filename!r}") from None
    except Exception as e:  # network boundary: connection, HTTP and consistency errors alike
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not download {filename} from {where}: {reason[:200]} "
            "-- pass a local path to the weights instead (a model.safetensors file or its directory)"
        ) from None
    _verify(Path(path), filename)
    return Path(path)


def _verify(path: Path, filename: str) -> None:
    blob = Path(os.path.realpath(path))
    if not _SHA256.fullmatch(blob.name):
        return  # small git files have a git-sha1 etag; nothing to compare against
    actual = sha256_file(blob)
    if actual != blob.name:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise UserError(f"downloaded {filename} is corrupt (sha256 {actual[:12]}…, expected {blob.name[:12]}…); "
                        "it was removed from the cache, run again to download it anew")
