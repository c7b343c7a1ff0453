"""The on-disk feature cache: two `gptclassify train` runs on the book's SMS split with SmolLM2
(real weights), the second changing only --lr. The first pays the frozen pass and keeps it; the
second reads it back. Target: the second's wall time at most 1/5 of the first's. Both caches start
empty, as on a new user's machine: the first run also converts the GGUF once (weights/converted.py).

    ../.venv/bin/python feature_cache.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from common import book_split, save, scratch_dir

HERE = Path(__file__).resolve().parent
GPTCLASSIFY = str(HERE.parent / ".venv" / "bin" / "gptclassify")
MODEL, WEIGHTS = "smollm2-135m", "smollm2-135m-instruct-gguf"


def train(data: Path, out: Path, env: dict, *extra: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([GPTCLASSIFY, "train", "--data", str(data), "--model", MODEL, "--weights", WEIGHTS,
                           "--out", str(out), *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    said = [line for line in done.stdout.splitlines() if line.startswith(("frozen pass:", "feature cache:"))]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_seconds": wall, "test_accuracy": metrics["test"]["accuracy"], "log": said[:2] + said[-1:]}


def main():
    work = scratch_dir("gptclassify-cache-")
    data = book_split(work / "sms")
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / "cache"),
           "GPTCLASSIFY_CONVERTED_CACHE": str(work / "converted")}
    first = train(data, work / "first", env)
    print(json.dumps({"first": first}), flush=True)
    second = train(data, work / "second", env, "--lr", "4e-4")
    print(json.dumps({"second": second}), flush=True)
    ratio = second["wall_seconds"] / first["wall_seconds"]
    print(f"second / first wall time: {ratio:.3f} (target <= 0.2)")
    save("feature_cache", {"weights": WEIGHTS, "model": MODEL, "first": first, "second_lr_4e-4": second,
                           "ratio": ratio})


if __name__ == "__main__":
    main()
