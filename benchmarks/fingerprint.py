"""Bit-for-bit fingerprints of training runs on the book split, to compare code before and after a change.

Each recipe trains a small random GPT-2 (4 blocks of width 128, Hugging Face layout, seed 0) on the
book's SMS split through the `gptclassify` command alone (so the script outlives any restructuring),
and records the sha256 of the saved weights, of every step loss and of the metrics (times left out).
A restructuring that claims "same results" must reproduce every fingerprint.

    python benchmarks/fingerprint.py results/fingerprint_before.json
    python benchmarks/fingerprint.py /tmp/after.json --compare benchmarks/results/fingerprint_before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, book_split, machine, scratch_dir

# name: (train arguments, processes)
RECIPES = {
    "book": (["--preset", "book", "--epochs", "2"], 1),
    "default": (["--epochs", "3"], 1),
    "select-by-f1-balanced": (["--epochs", "3", "--select-by", "macro-f1", "--class-weight", "balanced"], 1),
    "lora": (["--trainable", "lora", "--lora-rank", "4", "--epochs", "2"], 1),
    "no-cache-last-2": (["--no-cache", "--trainable", "last-2-blocks", "--epochs", "2", "--max-length", "48"], 1),
    "mean-pooling-cosine": (["--pooling", "mean", "--lr-schedule", "cosine", "--warmup-steps", "10", "--epochs", "2",
                             "--grad-clip", "1.0"], 1),
    "torchrun-2": (["--epochs", "2"], 2),
}
TIMES = ("seconds", "examples_per_second", "weights_load_seconds")


def small_gpt2(out: Path) -> Path:
    import torch
    import transformers

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=4, n_embd=128, n_head=4)).save_pretrained(out)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def train(name: str, data: Path, weights: Path, work: Path) -> dict:
    args, processes = RECIPES[name]
    run = work / name
    cli = ["-m", "gptclassify"] if processes == 1 else \
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "gptclassify"]
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE_GB": "0", "OMP_NUM_THREADS": "1" if processes > 1 else
           os.environ.get("OMP_NUM_THREADS", "2")}
    started = time.perf_counter()
    subprocess.run([sys.executable, *cli, "train", "--data", str(data), "--weights", str(weights),
                    "--out", str(run), "--overwrite", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    history = json.loads((run / "history.json").read_text())
    metrics = without_times(json.loads((run / "metrics.json").read_text()))
    return {"weights": sha((run / "model.safetensors").read_bytes()),
            "step_losses": sha(json.dumps(history["step_loss"]).encode()),
            "history": sha(json.dumps(without_times(history), sort_keys=True).encode()),
            "metrics": sha(json.dumps(metrics, sort_keys=True).encode()),
            "test_accuracy": metrics["test"]["accuracy"], "steps": len(history["step_loss"]),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint file: list what differs")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    args = parser.parse_args()
    work = scratch_dir("gptclassify-fingerprint-")
    data, weights = book_split(work / "sms"), small_gpt2(work / "gpt2-4x128")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    found = {}
    for name in args.recipes:
        found[name] = train(name, data, weights, work)
        print(name, found[name], flush=True)
    out = args.out if args.out.is_absolute() else RESULTS.parent / args.out
    out.write_text(json.dumps({"machine": machine(), "commit": commit, "command": " ".join(sys.argv),
                               "recipes": found}, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())["recipes"]
        keys = ("weights", "step_losses", "history", "metrics")
        differ = [f"{n}: {k}" for n in found if n in before for k in keys if found[n][k] != before[n][k]]
        print("identical to " + str(args.compare) if not differ else "DIFFERENT: " + "; ".join(differ))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
