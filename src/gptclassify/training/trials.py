"""`tune`'s trials: one training of a recipe (or of the recipes one training scores) on a fold, from
the cached states, and the trials of a fold run side by side on a CPU, one kernel thread each, by
workers that share the frozen weights and each have their own copy of the trainable ones."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import queue
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Subset

from ..classifier.names import window_combine
from ..classifier.tasks import headline
from ..data.batches import ByLength
from ..device import autocast_for
from .prepare import Prepared
from .steps import calc_loss_batch, class_weights, make_logits_fn, make_optimizer
from .tune_grid import Recipe, scored

PROBE_STEPS = 10


@dataclass
class Worker:
    """What one thread trains: per depth, the model (the frozen tensors shared with every worker, the
    trainable ones its own) and its logits function over the cached states."""

    models: dict
    logits: dict


def make_workers(prepared: dict[str, Prepared], n: int) -> list[Worker]:
    """`n` workers; the first trains the prepared models themselves."""
    first = Worker({d: p.model for d, p in prepared.items()}, {d: p.logits_fn for d, p in prepared.items()})
    out = [first]
    for _ in range(n - 1):
        models = {d: replica(p.model) for d, p in prepared.items()}
        out.append(Worker(models, {d: make_logits_fn(models[d], p.classifier.start, p.cfg.pooling, True,
                                                     autocast_for(p.device), None, p.cfg.recompute_blocks,
                                                     window_combine(p.task)) for d, p in prepared.items()}))
    return out


def replica(model: torch.nn.Module) -> torch.nn.Module:
    """The model again, sharing every frozen tensor with it: its own copy of the trainable ones."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers()) if not t.requires_grad}
    return copy.deepcopy(model, memo=shared)


def parallel_trials(prepared: dict[str, Prepared], grid_size: int) -> tuple[int, int]:
    """(workers, threads each): trials side by side, one thread each, as many as this process has
    threads (a step of a few texts keeps one core busy, not several). One worker, with every thread,
    on a GPU or when the suffix reads token ids (no cached states to share)."""
    threads = torch.get_num_threads()
    if any(p.device.type != "cpu" or not p.inputs.cached for p in prepared.values()):
        return 1, threads
    workers = max(1, min(threads, grid_size))
    return workers, max(1, threads // workers)


def trial(p: Prepared, worker: Worker, start: dict, data, train_rows: list[int], held_rows: list[int],
          recipes: list[Recipe], max_steps: int | None = None, stop=None) -> dict[str, tuple]:
    """Train the recipes of one training (`trainings`) from the starting weights on `train_rows`;
    each one's headline score on `held_rows` after its epochs, with the held-out logits and targets."""
    first, depth = recipes[0], recipes[0].trainable
    score_at = {r.epochs: r.name for r in recipes}
    cfg = replace(p.cfg, lr=first.lr, lr_schedule=first.schedule, epochs=max(score_at))
    model, logits_fn = worker.models[depth], worker.logits[depth]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in start:
                param.copy_(start[name])
    loader = trial_loader(p, data, train_rows)
    targets = targets_of(p)
    weight = class_weights(cfg, p.task, [targets[i] for i in train_rows], len(p.labels), p.device)
    optimizer, scheduler = make_optimizer(model, cfg, cfg.epochs * len(loader))
    params, steps, scores = [q for q in model.parameters() if q.requires_grad], 0, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        for batch in loader:
            if stop is not None and stop.is_set():
                raise Stopped
            optimizer.zero_grad()
            calc_loss_batch(batch, logits_fn, p.device, weight=weight, huber=cfg.loss == "huber").backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            steps += 1
            if max_steps and steps >= max_steps:
                return {}  # a timing probe
        if epoch in score_at and not max_steps:  # (not a timing probe)
            model.eval()
            logits, targets = held_out(p, logits_fn, data, held_rows)
            scores[score_at[epoch]] = (held_out_score(p, logits, targets), logits, targets)
    return scores


def trial_loader(p: Prepared, data, rows: list[int]) -> DataLoader:
    """`rows` of the training and validation splits (`data`) in the run's batch order, shuffled by the
    trial's own generator (trials run side by side)."""
    order = torch.Generator().manual_seed(p.cfg.seed)
    if p.cfg.batch_order == "by-length":
        sizes = sizes_of(p)
        return DataLoader(Subset(data, rows), batch_sampler=ByLength([sizes[i] for i in rows], p.cfg.batch_size, order),
                          collate_fn=p.inputs.collate)
    return DataLoader(Subset(data, rows), batch_size=p.cfg.batch_size, shuffle=True, generator=order,
                      collate_fn=p.inputs.collate)


def targets_of(p: Prepared) -> list:
    """The targets of the training and validation splits, in `data`'s order (what the folds split)."""
    return p.texts["train"][1] + p.texts["validation"][1]


def sizes_of(p: Prepared) -> list[int]:
    """The token positions of each text of the training and validation splits, in `data`'s order."""
    return p.tokens.datasets["train"].sizes + p.tokens.datasets["validation"].sizes


def spread_over_lengths(rows: list[int], sizes: list[int], n: int) -> list[int]:
    """`n` of `rows` evenly spaced from the shortest to the longest: batches of them cost, on
    average, what a training's batches cost (in either batch order)."""
    ranked = sorted(rows, key=lambda i: sizes[i])
    if len(ranked) <= n:
        return ranked
    return [ranked[round(k * (len(ranked) - 1) / (n - 1))] for k in range(n)]


@torch.no_grad()
def held_out(p: Prepared, logits_fn, data, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out texts' logits and targets, in the order of `rows`."""
    logits, targets = [], []
    for batch in DataLoader(Subset(data, rows), batch_size=64, collate_fn=p.inputs.collate):
        inputs, target, *rest = batch
        logits.append(logits_fn(inputs.to(p.device), *(t.to(p.device) for t in rest)).float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def held_out_score(p: Prepared, logits: torch.Tensor, targets: torch.Tensor) -> float:
    return headline(p.task, logits, targets)[1]


@contextlib.contextmanager
def threads_each(n: int):
    """Every kernel on `n` threads (the process's setting, put back after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def probe_seconds(prepared: dict[str, Prepared], workers: list[Worker], starts: dict, data: dict, rows: list[int],
                  threads: int) -> dict[str, float]:
    """Seconds per training step at each depth, with every worker training side by side on `threads`
    threads each (as the trials will: they share the memory bus), timed on a few steps after two
    untimed ones (a process's first steps pay for setting up its kernels). The weights are put back
    by the next trial. The steps' texts: `spread_over_lengths` of `rows`."""
    first = next(iter(prepared.values()))
    rows = spread_over_lengths(rows, sizes_of(first), PROBE_STEPS * first.cfg.batch_size)

    def steps(depth: str, worker: Worker, n: int) -> float:
        torch.set_num_threads(threads)
        p, started = prepared[depth], time.perf_counter()
        trial(p, worker, starts[depth], data[depth], rows, [], [Recipe(depth, p.cfg.lr, p.cfg.lr_schedule, 1)],
              max_steps=n)
        return (time.perf_counter() - started) / min(n, math.ceil(len(rows) / p.cfg.batch_size))

    out = {}
    with threads_each(threads), ThreadPoolExecutor(len(workers)) as pool:
        for depth in prepared:
            list(pool.map(lambda w: steps(depth, w, 2), workers))
            out[depth] = statistics.fmean(pool.map(lambda w: steps(depth, w, PROBE_STEPS), workers))
    return out


class Stopped(Exception):
    """Another trial failed or the user interrupted: the trials still running stop at their next step."""


def run_side_by_side(todo: list[list[Recipe]], prepared, workers: list[Worker], threads: int, starts, data,
                     rest: list[int], held: list[int], finished, fold: int) -> dict:
    """This process's trainings of a fold, each on the next free worker's thread (`threads` kernel
    threads each); `finished(results)` after each. Every result, keyed by recipe and fold."""
    free, stop, done = queue.SimpleQueue(), threading.Event(), {}
    for w in workers:
        free.put(w)

    def one(recipes: list[Recipe]) -> dict:
        worker = free.get()
        torch.set_num_threads(threads)  # this thread's kernels
        try:
            depth = recipes[0].trainable
            return trial(prepared[depth], worker, starts[depth], data[depth], rest, held, recipes, stop=stop)
        finally:
            free.put(worker)

    # A thread's setting is its own, and also what threads started after it begin with: this thread
    # sets its own again at the end, so that later ones (a server's worker) get the process's.
    with threads_each(torch.get_num_threads()), ThreadPoolExecutor(len(workers), thread_name_prefix="tune") as pool:
        futures = [pool.submit(one, t) for t in todo]
        try:
            for future in as_completed(futures):
                got = {scored(name, fold): result for name, result in future.result().items()}
                done.update(got)
                if finished:
                    finished(got)
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    return done
