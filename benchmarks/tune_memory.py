"""`gptclassify tune`'s peak memory against one `train` on a checkpoint as the hub ships it: SmolLM2-135M-
Instruct's real weights (from its GGUF) written as bfloat16 safetensors with config.json and tokenizer.json,
so that loading makes float32 copies in the process's own memory (a GGUF's converted cache is mapped
from disk instead, and the kernel can drop those pages). The book's SMS split; `train` with the
default recipe, then `tune --budget 90s`; each in its own process and empty feature cache.

    ../.venv/bin/python tune_memory.py                              # this checkout's gptclassify
    ../.venv/bin/python tune_memory.py --src /tmp/old/src --label before   # another commit's (a worktree)

Rows are kept by label in results/tune_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from accuracy_table import dataset
from common import RESULTS, save, scratch_dir
from long_text import MODEL, WEIGHTS, measured

def hub_style_checkpoint(out: Path) -> Path:
    """SmolLM2-135M-Instruct in the hub's layout, bfloat16 (in a child process: this one stays small)."""
    code = f"""
import json, shutil
from pathlib import Path
import torch
from safetensors.torch import save_file
from gptclassify.weights import load_model_and_tokenizer
from gptclassify.weights.to_hf import llama_config_to_hf, llama_state_to_hf
out = Path({str(out)!r})
m, tok, _ = load_model_and_tokenizer({MODEL!r}, {WEIGHTS!r})
state = {{k: v.to(torch.bfloat16).contiguous() for k, v in llama_state_to_hf(m.state_dict(), m.cfg).items()}}
save_file(state, out / "model.safetensors", metadata={{"format": "pt"}})
(out / "config.json").write_text(json.dumps(llama_config_to_hf(m.cfg) | {{"torch_dtype": "bfloat16"}}))
tok_file = next(Path.home().glob(".cache/gptclassify/converted/SmolLM2*/tokenizer.json"))
shutil.copy(tok_file, out / "tokenizer.json")
"""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", help="run gptclassify from this source folder (PYTHONPATH), e.g. another commit's")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--budget", default="90s")
    args = parser.parse_args()
    work = scratch_dir("gptclassify-tune-memory-")
    checkpoint = hub_style_checkpoint(work / "smollm2-bf16")
    env = {**os.environ, **({"PYTHONPATH": args.src} if args.src else {})}
    row = {}
    for command, extra in (("train", []), ("tune", ["--budget", args.budget])):
        run = work / command
        cmd = [sys.executable, "-m", "gptclassify", command, "--data", str(dataset("sms")), "--model", str(checkpoint),
               "--out", str(run), *extra]
        wall, rss, status = measured(cmd, {**env, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{command}")})
        if status != 0:
            raise SystemExit(f"{command}: failed ({status})")
        metrics = json.loads((run / "metrics.json").read_text())
        row[command] = {"wall_seconds": wall, "peak_rss_mb": rss, "test_accuracy": metrics["test"]["accuracy"]}
        shutil.rmtree(work / f"cache-{command}", ignore_errors=True)
    row["tune_over_train_memory"] = row["tune"]["peak_rss_mb"] / row["train"]["peak_rss_mb"]
    print(json.dumps(row), flush=True)
    results_file = RESULTS / "tune_memory.json"
    results = json.loads(results_file.read_text()).get("results", {}) if results_file.is_file() else {}
    results[args.label] = row
    save("tune_memory", {"checkpoint": "SmolLM2-135M-Instruct, bfloat16 safetensors", "results": results})


if __name__ == "__main__":
    main()
