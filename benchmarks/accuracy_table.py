"""One accuracy table over SMS spam and the three pinned datasets (sentiment, 10-topic, long e-mails)
with SmolLM2-135M-Instruct (real weights): our default recipe, LoRA on every block, the last 2 and
last 4 blocks trained, a TF-IDF + linear SVM baseline and the transformers peer doing our default
recipe on the same model, tokens and split.

    ../.venv/bin/python datasets.py rotten-tomatoes fortunes spam-assassin   # once: pinned downloads
    ../.venv/bin/python accuracy_table.py --datasets rotten-tomatoes --rows default tfidf peer
    ../.venv/bin/python accuracy_table.py --model gemma-3-270m-gguf --rows default   # another model's rows
    ../.venv/bin/python accuracy_table.py --table                              # print what is measured

Every gptclassify row is its own `gptclassify train` process in a fresh feature cache (so it pays
its frozen pass; wall time and peak RSS are that process's). The peer runs in its own process too.
Rows measured by earlier invocations are kept in results/accuracy_table.json. The subsets
(stratified, seed 0) keep each dataset's rows within this 2-core machine's time: see SUBSETS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import RESULTS, book_split, cpu_description, save, scratch_dir
from gptclassify.data.tokenizer import TRUNCATIONS
from gptclassify.config import TrainConfig
from long_text import GPTCLASSIFY, MODEL, WEIGHTS, json_child, measured, model_args, peer, subset, tfidf

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SUBSETS = {"rotten-tomatoes": (800, 200, 800), "fortunes": (800, 200, 800), "spam-assassin": (400, 100, 400)}
ROWS = {
    "default": [],
    "lora": ["--trainable", "lora"],  # rank 16, alpha 16, every block and the head
    "last-2-blocks": ["--trainable", "last-2-blocks"],
    "last-4-blocks": ["--trainable", "last-4-blocks"],
}
RESULTS_FILE = RESULTS / "accuracy_table.json"


def dataset(name: str) -> Path:
    if name == "sms":
        return book_split(DATA / "sms-book")
    full = DATA / name
    if not (full / "dataset.json").is_file():
        sys.exit(f"run `../.venv/bin/python datasets.py {name}` first")
    return subset(full, DATA / f"{name}-small", SUBSETS[name])  # spam-assassin: long_text.py's subset


def ours(row: str, data: Path, work: Path, extra: list[str], model: str | None = None) -> dict:
    run = work / row
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{row}")}
    cmd = [GPTCLASSIFY, "train", "--data", str(data), *model_args(model), "--out", str(run), "--overwrite", *ROWS[row], *extra]
    wall, rss, status = measured(cmd, env)
    if status != 0:
        raise SystemExit(f"{row}: train failed ({status})")
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "test_macro_f1": metrics["test"]["macro_f1"],
            "validation_accuracy": metrics["validation"]["accuracy"], "wall_seconds": wall, "peak_rss_mb": rss,
            "max_length": config["max_length"], "truncation": config["truncation"],
            "prefix_dtype": config.get("prefix_dtype"), "args": [*ROWS[row], *extra]}


def table(results: dict) -> str:
    lines = ["| dataset | recipe | test accuracy | test macro-F1 | wall s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        name, row = key.split("/", 1)
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        lines.append(f"| {name} | {row} | {r['test_accuracy']:.2%} | {r['test_macro_f1']:.4f} "
                     f"| {r['wall_seconds']:.0f} | {rss} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sms", "rotten-tomatoes", "fortunes", "spam-assassin"])
    parser.add_argument("--rows", nargs="+", default=[*ROWS, "tfidf", "peer"], choices=[*ROWS, "tfidf", "peer"])
    parser.add_argument("--max-length", type=int, help="a cap for every row (stated in the table)")
    parser.add_argument("--truncation", choices=TRUNCATIONS, help="the tokens a longer text keeps, for every row "
                        "(ours and the peer's; default: train's), stated in the table")
    parser.add_argument("--seed", type=int, help="another seed for the head's initialisation and the batch order "
                        "(ours and the peer's; default: train's), recorded as its own row")
    parser.add_argument("--tag", help="a note appended to every row's name (e.g. the machine), so that rows measured "
                        "elsewhere are kept beside these rather than replaced")
    parser.add_argument("--model", help="another model for our rows (a name, hub id or .gguf; default SmolLM2-135M-"
                        "Instruct's GGUF), named in every row's key")
    parser.add_argument("--table", action="store_true", help="print the measured table and stop")
    parser.add_argument("--peer-in-process", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_in_process:
        data, cap, seed, truncation = args.peer_in_process
        print(json.dumps(peer(Path(data), truncation, int(cap), seed=int(seed))))
        return
    results = json.loads(RESULTS_FILE.read_text()).get("results", {}) if RESULTS_FILE.is_file() else {}
    if args.table:
        print(table(results))
        return
    extra = ["--max-length", str(args.max_length)] if args.max_length else []
    suffix = f" (max_length {args.max_length})" if args.max_length else ""
    if args.truncation:
        extra += ["--truncation", args.truncation]
        suffix += f" ({args.truncation} truncation)"
    if args.seed is not None:
        extra += ["--seed", str(args.seed)]
        suffix += f" seed {args.seed}"
    if args.model:
        suffix += f" {{{args.model}}}"
    if args.tag:
        suffix += f" [{args.tag}]"
    for name in args.datasets:
        work = scratch_dir(f"gptclassify-table-{name}-")
        data = dataset(name)
        for row in args.rows:
            print(f"== {name} / {row}{suffix}", flush=True)
            if row == "tfidf":
                result = tfidf(data)
            elif row == "peer":  # the cap our default used (the longest training text, within 256)
                cap = args.max_length or results.get(f"{name}/default", {}).get("max_length", 256)
                seed = TrainConfig.seed if args.seed is None else args.seed
                truncation = args.truncation or TrainConfig.truncation
                result = json_child([sys.executable, __file__, "--peer-in-process", str(data), str(cap), str(seed),
                                     truncation])
            else:
                result = ours(row, data, work, extra, args.model)
            result.update(cpu=cpu_description(), date=time.strftime("%Y-%m-%d %H:%M"))
            results[f"{name}/{row}{suffix}"] = result
            print(json.dumps(result), flush=True)
            save("accuracy_table", {"weights": WEIGHTS, "model": MODEL, "subsets": SUBSETS, "results": results})
    print(table(results))


if __name__ == "__main__":
    main()
