"""What `--recompute-blocks` saves and costs: LoRA on every block of SmolLM2-135M-Instruct (real
weights), 1 epoch over 80 topic texts at 256 tokens (batch 8, 10 steps), with and without it, each
a `gptclassify train` process of its own: training seconds (metrics.json) and peak RSS.

    ../.venv/bin/python datasets.py fortunes      # once: the pinned download
    ../.venv/bin/python recompute.py
"""

from __future__ import annotations

import json
import os

from accuracy_table import DATA, dataset
from common import save, scratch_dir
from long_text import GPTCLASSIFY, MODEL, WEIGHTS, measured, subset


def main():
    dataset("fortunes")  # the full split is there (or the script says how to get it)
    data = subset(DATA / "fortunes", DATA / "fortunes-tiny", (80, 8, 8))
    work = scratch_dir("gptclassify-recompute-")
    rows = {}
    for name, extra in (("plain", []), ("recompute-blocks", ["--recompute-blocks"])):
        run = work / name
        cmd = [GPTCLASSIFY, "train", "--data", str(data), "--model", MODEL, "--weights", WEIGHTS, "--out", str(run),
               "--overwrite", "--trainable", "lora", "--epochs", "1", "--max-length", "256", *extra]
        wall, rss, status = measured(cmd, {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / "cache")})
        if status != 0:
            raise SystemExit(f"{name}: train failed ({status})")
        metrics = json.loads((run / "metrics.json").read_text())
        rows[name] = {"wall_seconds": wall, "training_seconds": metrics["training"]["seconds"], "peak_rss_mb": rss,
                      "train_loss": metrics["train"]["loss"]}
        print(name, json.dumps(rows[name]), flush=True)
    rows["ratios"] = {"training_time": rows["recompute-blocks"]["training_seconds"] / rows["plain"]["training_seconds"],
                      "peak_rss": rows["recompute-blocks"]["peak_rss_mb"] / rows["plain"]["peak_rss_mb"]}
    print(json.dumps(rows["ratios"]))
    save("recompute", rows)


if __name__ == "__main__":
    main()
