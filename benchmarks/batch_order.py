"""--batch-order by-length against shuffled: seconds for one epoch of training from the feature cache
at each depth `tune` tries (the last block, the last 2 and 4 blocks, LoRA on the last 2), and the
padded positions each order makes. SmolLM2-135M-Instruct (its GGUF) on the accuracy table's
datasets, four fifths of the training and validation texts (a fold's training), one process on
every thread; the frozen pass made first, not timed. Each depth's two orders are timed one after
the other, twice, and the faster of each kept.

    ../.venv/bin/python batch_order.py                      # sms, rotten-tomatoes, fortunes
    ../.venv/bin/python batch_order.py --datasets spam-assassin
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from torch.utils.data import ConcatDataset

from accuracy_table import dataset
from common import RESULTS, save, scratch_dir
from long_text import MODEL, WEIGHTS

from gptclassify.config import TrainConfig
from gptclassify.data.folds import stratified_folds
from gptclassify.training import trials, tune

RESULTS_FILE = RESULTS / "batch_order.json"


def padded_positions(p, data, rows: list[int]) -> int:
    """Positions of every batch of one epoch, padding included, in `p`'s batch order."""
    return sum(batch[0].shape[0] * batch[0].shape[1] for batch in trials.trial_loader(p, data, rows))


def one_epoch(p, worker, start, data, rows: list[int]) -> float:
    steps = len(trials.trial_loader(p, data, rows))
    started = time.perf_counter()
    trials.trial(p, worker, start, data, rows, [], [tune.Recipe(p.cfg.trainable, p.cfg.lr, p.cfg.lr_schedule, 1)],
                 max_steps=steps)
    return time.perf_counter() - started


def measure(name: str) -> dict:
    work = scratch_dir(f"gptclassify-batch-order-{name}-")
    prepared = tune.prepare_depths(MODEL, WEIGHTS, dataset(name), TrainConfig(), work / "run", lambda *a: None)
    first = next(iter(prepared.values()))
    folds = stratified_folds(trials.targets_of(first), 5, first.cfg.seed)
    rows = [i for f in folds[1:] for i in f]
    (worker,) = trials.make_workers(prepared, 1)
    out = {"texts": len(rows), "real_positions": sum(trials.sizes_of(first)[i] for i in rows), "depths": {}}
    for depth, p in prepared.items():
        data = ConcatDataset([p.inputs.sets["train"], p.inputs.sets["validation"]])
        start = {n: q.detach().clone() for n, q in p.model.named_parameters() if q.requires_grad}
        base, row = p.classifier.cfg, {}
        one_epoch(p, worker, start, data, rows[:40])  # kernels set up, not timed
        for order in ("shuffled", "by-length", "shuffled", "by-length"):
            p.classifier.cfg = replace(base, batch_order=order)
            seconds = one_epoch(p, worker, start, data, rows)
            row[order] = {"seconds": min(seconds, row.get(order, {}).get("seconds", seconds)),
                          "padded_positions": padded_positions(p, data, rows)}
        p.classifier.cfg = base
        row["speedup"] = row["shuffled"]["seconds"] / row["by-length"]["seconds"]
        out["depths"][depth] = row
        print(name, depth, json.dumps(row), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sms", "rotten-tomatoes", "fortunes"])
    args = parser.parse_args()
    results = json.loads(RESULTS_FILE.read_text())["results"] if RESULTS_FILE.is_file() else {}
    for name in args.datasets:  # rows of earlier invocations kept
        results[name] = measure(name)
        path = save("batch_order", {"model": MODEL, "weights": WEIGHTS, "threads": torch.get_num_threads(),
                                    "results": results})
    print(f"written {path}")


if __name__ == "__main__":
    main()
