"""Shared set-up for the benchmark scripts: the book split of the real SMS data, offline tokenizers."""

from __future__ import annotations

import atexit
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPTCLASSIFY_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
if (SHARED / "gpt2" / "encoder.json").is_file():
    os.environ.setdefault("GPTCLASSIFY_GPT2_BPE_DIR", str(SHARED / "gpt2"))


def scratch_dir(prefix: str) -> Path:
    """A fresh folder under the system's temporary directory, removed when the script exits (runs of real
    weights leave gigabytes there); GPTCLASSIFY_KEEP_SCRATCH=1 keeps it for a look afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("GPTCLASSIFY_KEEP_SCRATCH"):
        print(f"scratch kept in {path}", flush=True)
    else:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def book_split(out: Path, source: str | None = None) -> Path:
    """`gptclassify prepare sms-spam` (the book's split) from the shared file, once."""
    from gptclassify.data.splits import prepare_sms_spam, write_prepared

    if not (out / "dataset.json").is_file():
        src = source or (str(SHARED / "SMSSpamCollection") if (SHARED / "SMSSpamCollection").is_file() else None)
        write_prepared(prepare_sms_spam(src), out, params={"source": src})
    return out


def gpt2_vocab_and_merges() -> tuple[dict, list[tuple[str, str]]]:
    """GPT-2's BPE vocabulary and merges, from the shared encoder.json and vocab.bpe."""
    vocab = json.loads((SHARED / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    lines = (SHARED / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    return vocab, [tuple(line.split()) for line in lines if line]


def cpu_description() -> str:
    """The CPU's model name and the matrix features that change which precision is fast."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model or platform.machine()} ({', '.join(features) or 'no AVX2'})"


def machine() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_description(), "cores": os.cpu_count(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **result}, indent=2))
    return path


def benchmark_run(work: Path | None = None) -> Path:
    """A GPT-2 124M classifier run (random weights, a few steps on the book split), made once."""
    from gptclassify.training.run import train_run
    from gptclassify.config import make_config

    work = work or Path(os.environ.get("TMPDIR", "/tmp")) / "gptclassify-bench"
    run = work / "run-gpt2-random"
    if not (run / "config.json").is_file():
        data = book_split(work / "sms")
        train_run("gpt2", "random", data, make_config(None, epochs=1, max_steps=20), run, log=lambda *a: None)
    return run


def sms_messages() -> list[str]:
    with open(SHARED / "SMSSpamCollection", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


@contextmanager
def serving(run: Path, *args: str, env: dict | None = None, device: str = "cpu"):
    """`gptclassify serve RUN ARGS` on a free port of 127.0.0.1; yields its base URL once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gptclassify.cli", "serve", str(run), "--port", str(port),
                               "--device", device, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_clients(client, clients: int) -> float:
    """`client(i)` for i in range(clients), each in its own thread at once; seconds until the last ends."""
    import threading

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started
