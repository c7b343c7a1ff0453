"""Trials side by side: `tune`'s trials on one thread each, as many at a time as the process has
threads, against the same trials one after another on every thread. SmolLM2-135M-Instruct (its
GGUF), the book's SMS split, the last block at four rates for 3 epochs on four fifths of the
training and validation texts (a fold's training), from the feature cache (made first, not timed).
The held-out scores must be the same both ways.

    ../.venv/bin/python tune_side_by_side.py
"""

from __future__ import annotations

import json
import time

import torch
from torch.utils.data import ConcatDataset

from common import book_split, save, scratch_dir
from long_text import MODEL, WEIGHTS

from gptclassify.config import TrainConfig
from gptclassify.data.folds import stratified_folds
from gptclassify.training import trials, tune, tune_grid


def main():
    work = scratch_dir("gptclassify-side-by-side-")
    prepared = tune.prepare_depths(MODEL, WEIGHTS, book_split(work / "data"), TrainConfig(), work / "run",
                                   lambda *a: None)
    prepared = {"last-block": prepared["last-block"]}
    p = prepared["last-block"]
    folds = stratified_folds(trials.targets_of(p), 5, p.cfg.seed)
    rest = [i for f in folds[1:] for i in f]
    data = {"last-block": ConcatDataset([p.inputs.sets["train"], p.inputs.sets["validation"]])}
    starts = {"last-block": {n: q.detach().clone() for n, q in p.model.named_parameters() if q.requires_grad}}
    todo = [[tune_grid.Recipe("last-block", p.cfg.lr * f, "cosine", 3)] for f in (1, 2, 0.5, 4)]
    threads, results = torch.get_num_threads(), {}
    for name, side in (("one after another", 1), ("side by side", threads), ("one after another, again", 1),
                       ("side by side, again", threads)):
        workers = trials.make_workers(prepared, side)
        started = time.perf_counter()
        done = trials.run_side_by_side(todo, prepared, workers, max(1, threads // side), starts, data, rest, folds[0],
                                     None, 0)
        results[name] = {"seconds": time.perf_counter() - started, "workers": side,
                         "threads_each": max(1, threads // side),
                         "scores": {k: v[0] for k, v in sorted(done.items())}}
        print(name, json.dumps(results[name]), flush=True)
    assert len({json.dumps(r["scores"]) for r in results.values()}) == 1, "the scores differ"
    one = min(results["one after another"]["seconds"], results["one after another, again"]["seconds"])
    side = min(results["side by side"]["seconds"], results["side by side, again"]["seconds"])
    results["speedup"] = one / side
    print(f"side by side: {results['speedup']:.2f}x the trials per second", flush=True)
    save("tune_side_by_side", {"model": MODEL, "weights": WEIGHTS, "trials": len(todo), "results": results})


if __name__ == "__main__":
    main()
