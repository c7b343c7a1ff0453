"""The frozen prefix in float32, bfloat16 and int8 (--prefix-dtype): its speed in one process on
this machine, and the test accuracy each gives, with SmolLM2-135M-Instruct (real weights).

    ../.venv/bin/python prefix_dtype.py                       # speed, then SMS accuracy of each
    ../.venv/bin/python prefix_dtype.py --only speed
    ../.venv/bin/python prefix_dtype.py --only sms-int8 spam-assassin-int8
    ../.venv/bin/python prefix_dtype.py --only rotten-tomatoes-float32 rotten-tomatoes-int8 rotten-tomatoes-bfloat16

Speed: the same 320 messages of the book's SMS split (length-sorted batches of 32, as the frozen
pass batches them) through the embedding and 29 frozen blocks, each precision three times,
interleaved (float32, bfloat16, int8, float32, ...), median taken; and how far each precision's
features are from float32's. Accuracy: `gptclassify train --prefix-dtype X` on the book's split
(and on the long-text subset of long_text.py at 256 tokens, head), each its own process and cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from common import RESULTS, book_split, save, scratch_dir

HERE = Path(__file__).resolve().parent
GPTCLASSIFY = str(HERE.parent / ".venv" / "bin" / "gptclassify")
MODEL, WEIGHTS = "smollm2-135m", "smollm2-135m-instruct-gguf"
DTYPES = ("float32", "bfloat16", "int8")


def speed(data: Path) -> dict:
    import pandas as pd
    import torch

    from gptclassify.data.batches import Collate
    from gptclassify.data.lengths import length_sorted_batches
    from gptclassify.classifier.prefix import FrozenPrefix, cpu_native_bf16, describe_cpu
    from gptclassify.weights import load_tokenizer
    from gptclassify.weights import load_pretrained

    model = load_pretrained(WEIGHTS).eval()
    tok = load_tokenizer(WEIGHTS)
    texts = pd.read_csv(data / "train.csv", keep_default_na=False, dtype=str)["text"].tolist()[:320]
    encoded = [tok.encode(t) for t in texts]
    collate = Collate(tok.pad_id)
    batches = [collate([(encoded[i], 0) for i in rows])[0] for rows in length_sorted_batches([len(e) for e in encoded], 32)]
    positions = sum(len(e) for e in encoded)
    start = len(model.trf_blocks) - 1
    cpu = torch.device("cpu")
    prefixes = {d: FrozenPrefix(model, start, d, cpu) for d in DTYPES}
    times = {d: [] for d in DTYPES}
    for _ in range(3):
        for d in DTYPES:
            began = time.perf_counter()
            for ids in batches:
                prefixes[d](ids)
            times[d].append(time.perf_counter() - began)
            print(f"   {d}: {times[d][-1]:.1f}s", flush=True)
    exact = torch.cat([prefixes["float32"](ids).reshape(-1, model.cfg.emb_dim) for ids in batches[:3]])
    out = {"positions": positions, "cpu": describe_cpu(), "native_bf16": cpu_native_bf16(), "dtypes": {}}
    for d in DTYPES:
        got = torch.cat([prefixes[d](ids).float().reshape(-1, model.cfg.emb_dim) for ids in batches[:3]])
        seconds = statistics.median(times[d])
        out["dtypes"][d] = {"seconds": seconds, "runs": times[d], "positions_per_second": positions / seconds,
                            "speedup_over_float32": statistics.median(times["float32"]) / seconds,
                            "relative_error": ((got - exact).norm() / exact.norm()).item()}
    return out


def accuracy(data: Path, dtype: str, work: Path, extra: list[str]) -> dict:
    run = work / f"run-{dtype}-{data.name}"
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{dtype}-{data.name}")}
    started = time.perf_counter()
    log = subprocess.run([GPTCLASSIFY, "train", "--data", str(data), "--model", MODEL, "--weights", WEIGHTS,
                          "--out", str(run), "--overwrite", "--prefix-dtype", dtype, *extra],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if log.returncode != 0:
        raise SystemExit(log.stderr[-2000:])
    seconds = next(float(line.split(" in ")[-1].split("s")[0]) for line in log.stdout.splitlines()
                   if line.startswith("feature cache:") and "positions through the frozen layers" in line)
    metrics = json.loads((run / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "test_macro_f1": metrics["test"]["macro_f1"],
            "test_confusion_matrix": metrics["test"]["confusion_matrix"], "frozen_pass_seconds": seconds,
            "wall_seconds": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+",
                        help="speed, sms-float32, sms-bfloat16, sms-int8, spam-assassin-int8, rotten-tomatoes-int8, ...")
    args = parser.parse_args()
    work = scratch_dir("gptclassify-prefix-")
    sms = book_split(work / "sms")
    long_text = HERE / "data" / "spam-assassin-small"
    previous = RESULTS / "prefix_dtype.json"
    results = json.loads(previous.read_text()).get("results", {}) if previous.is_file() else {}
    for name in args.only or ["speed", *(f"sms-{d}" for d in DTYPES)]:
        print(f"== {name}", flush=True)
        if name == "speed":
            results["speed"] = speed(sms)
        else:
            dataset, dtype = name.rsplit("-", 1)
            if dataset == "sms":
                results[name] = accuracy(sms, dtype, work, [])
            elif dataset == "rotten-tomatoes":  # the subset of accuracy_table.py (800/200/800 snippets)
                results[name] = accuracy(HERE / "data" / "rotten-tomatoes-small", dtype, work, [])
            else:
                results[name] = accuracy(long_text, dtype, work, ["--max-length", "256", "--truncation", "head"])
        print(json.dumps({name: results[name]}), flush=True)
        save("prefix_dtype", {"weights": WEIGHTS, "model": MODEL, "results": results})


if __name__ == "__main__":
    main()
