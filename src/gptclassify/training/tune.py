"""`gptclassify tune`: the recipe chosen by k-fold cross-validation on the cached features, then
trained on the whole training split as a normal run.

1. One frozen pass that keeps the states every trainable depth of the grid starts from (entering the
   last block, the last 2 blocks) in the on-disk feature cache: each depth's trials, the final
   `train` and later runs read them there.
2. Folds: the training and validation splits together, stratified (`data.folds`); the test split is
   never scored.
3. The grid: the model family's rate (x 1, 2, 1/2, then 4, 1/4) x schedule (the family's and the
   other) x trainable depth x epochs, the likeliest and cheapest first, then LoRA on the last 2
   blocks (it reads the last-2-blocks states); sized to `--budget` (the whole tune's time) from a
   timed probe of each depth, the cost said before it starts (the dear depths are left out first).
4. Cheap trials: at a constant rate one training scores its 3- and 5-epoch recipes (`trainings`);
   on a CPU the trials run side by side, one kernel thread each (`run_side_by_side`), the frozen
   weights shared and each its own trainable copy (`replica`) and data order.
5. Successive halving over the folds: every recipe is scored on the first fold, the better half goes
   on to the next fold, and so on (never fewer than two), so the finalists have every fold and a
   losing recipe costs a fold or two. Each finished (recipe, fold) is written at once, its held-out
   logits beside it: a killed `tune` run again continues after it, to the same table.
6. The winner (best mean over all folds) is trained on the training split as `train` would, its
   temperature fitted on its out-of-fold logits (every training and validation text, each scored by
   the fold model that did not train on it); its run says it was tuned; `tuning.json` holds every
   recipe's mean, spread and scores.

Under torchrun the trials are shared out, not the examples: every process holds every example
(rank 0 makes the frozen pass, the others read it from the on-disk cache), each fold's trials go
round the processes, and their results are gathered after the fold, so the table is the one a
single process makes. The winner then trains data-parallel, as `train` under torchrun does.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import itertools
import math
import queue
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset, DataLoader, Subset

from ..classifier.names import window_combine
from ..classifier.tasks import HEADLINES, headline
from ..config import TrainConfig
from ..device import autocast_for
from ..data.folds import stratified_folds
from ..distributed import World, all_gather_objects, alone, barrier, current
from ..errors import UserError
from ..failpoints import failpoint
from ..files import read_json, save_safetensors, write_json
from ..hub import sha256_file
from .prepare import Prepared, prepare
from .run import train_run
from .steps import calc_loss_batch, make_logits_fn, make_optimizer

RATE_FACTORS = (1.0, 2.0, 0.5, 4.0, 0.25)  # times the family's rate, the likeliest first
CORE_FACTORS = 3  # the first three: every depth and schedule tries them before the outer two
DEPTHS = ("last-block", "last-2-blocks", "lora")  # lora: adapters on the last LORA_BLOCKS blocks (and the head)
EPOCHS = (5, 3)
LORA_BLOCKS = 2  # the same frozen prefix as last-2-blocks: one cached pass serves both
LORA_FACTORS = (1.0, 4.0)  # LoRA's rates, times the family's: at the grid's end, the first a budget cuts
FINALISTS = 2  # successive halving keeps at least this many recipes to the last fold
PROBE_STEPS = 10
# Trials took up to 9% longer than the probe's steps said (their held-out scoring, the later folds'
# survivors dearer than the average recipe, a shared machine; benchmarks/README.md): the budget
# plans for this much more.
MARGIN = 1.1


@dataclass(frozen=True)
class Recipe:
    trainable: str
    lr: float
    schedule: str
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.trainable}, lr {self.lr:.3g}, {self.schedule}, {self.epochs} epochs"


def other_schedule(schedule: str) -> str:
    """The schedule the grid tries beside the family's: a constant rate, or (for a constant family) cosine."""
    return "cosine" if schedule == "constant" else "constant"


def make_grid(rate: float, schedule: str, depths: tuple[str, ...]) -> list[Recipe]:
    """Every recipe, the likeliest and cheapest first (a budget keeps what fits, in this order): the
    last block at the family's rate x 1, 2 and 1/2 on both schedules, then the last 2 blocks on the
    family's schedule at those rates, then the outer rates (x 4, x 1/4), then LoRA."""
    schedules = (schedule, other_schedule(schedule))
    core, outer = RATE_FACTORS[:CORE_FACTORS], RATE_FACTORS[CORE_FACTORS:]
    shallow = [d for d in depths if d == "last-block"]
    deep = [d for d in depths if d not in ("last-block", "lora")]
    grid = [Recipe(d, rate * f, s, e) for d in shallow for f in core for e in EPOCHS for s in schedules]
    grid += [Recipe(d, rate * f, schedule, e) for d in deep for f in core for e in EPOCHS]
    grid += [Recipe(d, rate * f, s, e) for d in shallow for f in outer for e in EPOCHS for s in schedules]
    grid += [Recipe(d, rate * f, schedule, e) for d in deep for f in outer for e in EPOCHS]
    return grid + [Recipe("lora", rate * f, schedule, EPOCHS[0]) for f in LORA_FACTORS if "lora" in depths]


def trainings(recipes: list[Recipe]) -> list[list[Recipe]]:
    """The recipes one training scores, in order: at a constant rate, a shorter recipe is the first
    epochs of a longer one (the same steps in the same order), so one training scores both."""
    groups: dict[tuple, list[Recipe]] = {}
    for r in recipes:
        key = (r.trainable, r.lr, r.schedule, None if r.schedule == "constant" else r.epochs)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def depth_settings(base: TrainConfig, depth: str, n_layers: int | None = None) -> TrainConfig:
    """`base` training at `depth` (LoRA on the last LORA_BLOCKS blocks, or all of a smaller model's)."""
    if depth == "lora":
        return replace(base, trainable="lora", lora_blocks=min(LORA_BLOCKS, n_layers or LORA_BLOCKS))
    return replace(base, trainable=depth)


def planned_trainings(n_recipes: int, folds: int) -> list[int]:
    """Recipes trained on each fold under successive halving."""
    alive, out = n_recipes, []
    for k in range(folds):
        out.append(alive)
        alive = max(min(FINALISTS, alive), math.ceil(alive / 2))
    return out


def parse_budget(text: str | None) -> float | None:
    """'30m', '1.5h', '600s' or '45' (minutes) -> seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "m")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise UserError(f"--budget {text!r}: a time such as 30m, 1.5h or 600s") from None
    if not seconds > 0:
        raise UserError(f"--budget {text!r}: must be more than nothing")
    return seconds


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
    order = torch.Generator().manual_seed(cfg.seed)  # this trial's own: trials run side by side
    loader = DataLoader(Subset(data, train_rows), batch_size=cfg.batch_size, shuffle=True, generator=order,
                        collate_fn=p.inputs.collate)
    optimizer, scheduler = make_optimizer(model, cfg, cfg.epochs * len(loader))
    params, steps, scores = [q for q in model.parameters() if q.requires_grad], 0, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        for batch in loader:
            if stop is not None and stop.is_set():
                raise Stopped
            optimizer.zero_grad()
            calc_loss_batch(batch, logits_fn, p.device, huber=cfg.loss == "huber").backward()
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


def setup_key(model, weights, data_dir: Path, base: TrainConfig, folds: int, grid: list[Recipe],
              budget: float | None) -> dict:
    """What a partial tuning was made from: its trials are reused only for the same (and its grid, as
    the budget cut it then, is kept: the same command again ends with the same table)."""
    return {"model": model, "weights": weights, "data": {s: sha256_file(data_dir / f"{s}.csv")
                                                         for s in ("train", "validation")},
            "base": asdict(base), "folds": folds, "grid": [r.name for r in grid], "budget": budget}


def prepare_everywhere(model, weights, data_dir: Path, base: TrainConfig, run_dir: Path, log,
                       world: World) -> dict[str, Prepared]:
    """`prepare_depths` with every example in every process: rank 0 first, so that its frozen passes
    are in the on-disk cache when the others, after it, read them from there."""
    if not world.is_main:
        barrier()
    with alone():
        prepared = prepare_depths(model, weights, data_dir, base, run_dir, log)
    if world.is_main:
        barrier()
    return prepared


def prepare_depths(model, weights, data_dir: Path, base: TrainConfig, run_dir: Path, log) -> dict[str, Prepared]:
    """One prepared classifier per trainable depth, from one frozen pass: the first depth's pass keeps
    the states every other depth starts from in the on-disk cache too, and the others read them there."""
    prepared, deepest, n_layers = {}, False, None
    others = tuple(dict.fromkeys(d if d != "lora" else f"last-{LORA_BLOCKS}-blocks" for d in DEPTHS[1:]))
    for depth in DEPTHS:
        if deepest and depth != "lora":  # the model has no block left to freeze
            continue
        p = prepare(model, weights, data_dir, depth_settings(base, depth, n_layers), run_dir / ".tuning" / depth, log,
                    also_keep=others if not prepared else ())
        prepared[depth], n_layers = p, len(p.model.trf_blocks)
        deepest = deepest or p.classifier.start <= 0
    return prepared


def probe_seconds(prepared: dict[str, Prepared], workers: list[Worker], starts: dict, data: dict, rows: list[int],
                  threads: int) -> dict[str, float]:
    """Seconds per training step at each depth, with every worker training side by side on `threads`
    threads each (as the trials will: they share the memory bus), timed on a few steps after two
    untimed ones (a process's first steps pay for setting up its kernels). The weights are put back
    by the next trial."""
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


@dataclass
class Costs:
    """What sizes the grid: seconds per step at each depth, steps per epoch of a fold's training and of
    the whole training split (the final run's), and how many trainings run side by side."""

    step_seconds: dict
    fold_steps: int
    final_steps: int
    side_by_side: int

    def training(self, recipes: list[Recipe], steps: int) -> float:
        return self.step_seconds[recipes[0].trainable] * steps * max(r.epochs for r in recipes)

    def cross_validation(self, grid: list[Recipe], folds: int) -> float:
        """Seconds successive halving takes over `grid`: every recipe on the first fold, and on each
        later fold its share of the first's cost (the survivors costing what the average recipe does)."""
        if not grid:
            return 0.0
        first = sum(self.training(t, self.fold_steps) for t in trainings(grid))
        return MARGIN * sum(first * n / len(grid) for n in planned_trainings(len(grid), folds)) / self.side_by_side

    def final(self, grid: list[Recipe]) -> float:
        """The winner's training on the whole training split, at worst the dearest recipe's."""
        return max((self.training([r], self.final_steps) for r in grid), default=0.0)


def sized_to(grid: list[Recipe], seconds: float | None, folds: int, costs: Costs) -> list[Recipe]:
    """The recipes, in the grid's order, that fit in `seconds` with the final training (each one
    that would pass it left out; the first two always kept)."""
    if seconds is None:
        return grid
    kept = []
    for r in grid:
        if len(kept) < FINALISTS or costs.cross_validation(kept + [r], folds) + costs.final(kept + [r]) <= seconds:
            kept.append(r)
    return kept


class Stopped(Exception):
    """Another trial failed or the user interrupted: the trials still running stop at their next step."""


def cross_validate(prepared, workers: list[Worker], threads: int, starts, data, folds, grid, scores: dict, record,
                   log, world: World = World()) -> int:
    """Successive halving over the folds; `scores[f"{recipe name}|{fold}"]` filled in. Each fold's
    trainings are shared out between the processes and, in each, run side by side by its workers.
    `record(results)` keeps each result (score, held-out logits and targets) as it comes when alone,
    under torchrun after the fold (gathered on every process). Returns how many trainings ran."""
    alive, ran = list(grid), 0
    for k, held in enumerate(folds):
        rest = [i for j, f in enumerate(folds) if j != k for i in f]
        todo = trainings([r for r in alive if f"{r.name}|{k}" not in scores])
        done = run_side_by_side(todo[world.rank::world.size], prepared, workers, threads, starts, data, rest, held,
                                record if world.size == 1 else None, k)
        ran += len(todo)
        if world.size > 1:
            for got in all_gather_objects(done):
                record(got)
        means = {r.name: mean_of(scores, r, k + 1) for r in alive}
        best = max(alive, key=lambda r: means[r.name])
        log(f"tune: fold {k + 1}/{len(folds)}: {len(alive)} recipes; best so far {best.name} "
            f"({means[best.name]:.4f})")
        if k < len(folds) - 1:
            alive = sorted(alive, key=lambda r: -means[r.name])[:planned_trainings(len(grid), len(folds))[k + 1]]
    return ran


def recorder(scores: dict, partial: Path, header: dict, held_dir: Path, is_main: bool):
    """What keeps each finished result: its score in `scores` and in the partial table (written at once
    by rank 0), its held-out logits in `held_dir`; a killed tune goes on after it."""
    def record(results: dict) -> None:
        scores.update({name: score for name, (score, _, _) in results.items()})
        for name, (_, logits, targets) in results.items():  # every process (under torchrun, its own disk's)
            save_safetensors({"logits": logits.contiguous(), "targets": targets.contiguous()},
                             held_out_file(held_dir, name))
        if is_main:
            write_json(partial, {**header, "scores": scores})
        failpoint("tune-trial")
    return record


def held_out_file(held_dir: Path, name: str) -> Path:
    return held_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.safetensors"


def out_of_fold(held_dir: Path, winner: Recipe, folds: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The winner's logits and targets on every training and validation text, each from the fold
    model that did not train on it; None when one fold's are missing."""
    files = [held_out_file(held_dir, f"{winner.name}|{k}") for k in range(folds)]
    if not all(f.is_file() for f in files):
        return None
    parts = [load_file(f) for f in files]
    return torch.cat([t["logits"] for t in parts]), torch.cat([t["targets"] for t in parts])


def run_side_by_side(todo: list[list[Recipe]], prepared, workers: list[Worker], threads: int, starts, data,
                     rest: list[int], held: list[int], finished, fold: int) -> dict:
    """This process's trainings of a fold, each on the next free worker's thread (`threads` kernel
    threads each); `finished(results)` after each. Every result, keyed by recipe and fold."""
    free, stop, done = queue.SimpleQueue(), threading.Event(), {}
    for w in workers:
        free.put(w)

    def one(recipes: list[Recipe]) -> dict:
        worker = free.get()
        torch.set_num_threads(threads)  # this thread's kernels (the setting is each thread's own)
        try:
            depth = recipes[0].trainable
            return trial(prepared[depth], worker, starts[depth], data[depth], rest, held, recipes, stop=stop)
        finally:
            free.put(worker)

    with ThreadPoolExecutor(len(workers), thread_name_prefix="tune") as pool:
        futures = [pool.submit(one, t) for t in todo]
        try:
            for future in as_completed(futures):
                got = {f"{name}|{fold}": result for name, result in future.result().items()}
                done.update(got)
                if finished:
                    finished(got)
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    return done


def mean_of(scores: dict, r: Recipe, folds: int) -> float:
    return statistics.fmean(scores[f"{r.name}|{k}"] for k in range(folds))


def table(grid: list[Recipe], scores: dict, folds: int, metric: str) -> list[dict]:
    """Every recipe with its scores, the finalists (every fold) first by mean, then the rest by mean."""
    rows = []
    for r in grid:
        got = [scores[f"{r.name}|{k}"] for k in range(folds) if f"{r.name}|{k}" in scores]
        rows.append({"recipe": r.name, **asdict(r), "metric": metric, "folds": len(got), "scores": got,
                     "mean": statistics.fmean(got) if got else None,
                     "std": statistics.pstdev(got) if len(got) > 1 else 0.0})
    return sorted(rows, key=lambda row: (-row["folds"], -(row["mean"] if row["mean"] is not None else -math.inf)))


def tune_run(model, weights, data_dir: Path, base: TrainConfig, run_dir: Path, folds: int = 5,
             budget: float | None = None, log=print) -> dict:
    """Cross-validate the grid, write tuning.json, train the winner into `run_dir`; its metrics.
    `budget`: seconds for the whole of it (the grid is cut to fit), or None for the whole grid."""
    started = time.perf_counter()
    world = current()
    log = log if world.is_main else (lambda *a, **k: None)
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    prepared = prepare_everywhere(model, weights, data_dir, base, run_dir, log, world)
    first = next(iter(prepared.values()))
    targets = first.texts["train"][1] + first.texts["validation"][1]
    if len(targets) < 2 * folds:
        raise UserError(f"{len(targets)} training and validation texts cannot make {folds} folds")
    fold_rows = stratified_folds(targets, folds, base.seed)
    data = {d: ConcatDataset([p.inputs.sets["train"], p.inputs.sets["validation"]]) for d, p in prepared.items()}
    starts = {d: {n: q.detach().clone() for n, q in p.model.named_parameters() if q.requires_grad}
              for d, p in prepared.items()}
    grid = make_grid(first.cfg.lr, first.cfg.lr_schedule, tuple(prepared))
    full, n_layers = len(grid), len(first.model.trf_blocks)
    side, threads = parallel_trials(prepared, len(grid))
    workers = make_workers(prepared, side)
    probed = probe_seconds(prepared, workers, starts, data, fold_rows[0], threads) if world.is_main else None
    costs = Costs(all_gather_objects(probed)[0],  # rank 0's timing sizes the grid everywhere
                  math.ceil(len(targets) * (folds - 1) / folds / base.batch_size),
                  math.ceil(len(first.texts["train"][1]) / base.batch_size), side * world.size)
    partial = run_dir / "tuning.partial.json"
    key = setup_key(model, weights, data_dir, base, folds, grid, budget)
    saved = all_gather_objects(read_json(partial) if world.is_main and partial.is_file() else None)[0]
    if saved and saved.get("key") == key:  # the same command again: its grid and finished scores
        grid, scores = [r for r in grid if r.name in set(saved["grid"])], saved["scores"]
        log(f"tune: {len(scores)} finished scores read back from {partial.name}")
    else:
        left = None if budget is None else budget - (time.perf_counter() - started)
        grid, scores = sized_to(grid, left, folds, costs), {}
    workers = workers[:max(1, min(side, len(grid)))]
    alongside = f", {len(workers)} at a time" if len(workers) > 1 else ""
    shared = f", shared by {world.size} processes" if world.size > 1 else ""
    log(f"tune: {len(grid)} recipes{f' of {full} (--budget)' if len(grid) < full else ''}, {folds} folds of "
        f"{len(targets):,} texts (the test split is not read), successive halving: about "
        f"{costs.cross_validation(grid, folds) / 60:.1f} min of trials{alongside}{shared}, then about "
        f"{costs.final(grid) / 60:.1f} min for the winner's training")
    held_dir, trials_started = run_dir / ".tuning" / "held-out", time.perf_counter()
    ran = cross_validate(prepared, workers, threads, starts, data, fold_rows, grid, scores,
                         recorder(scores, partial, {"key": key, "grid": [r.name for r in grid]}, held_dir,
                                  world.is_main), log, world)
    log(f"tune: {ran} trainings in {(time.perf_counter() - trials_started) / 60:.1f} min (planned: about "
        f"{costs.cross_validation(grid, folds) / 60:.1f})")
    metric = HEADLINES[first.task]
    rows = table(grid, scores, folds, metric)
    winner = next(r for r in grid if r.name == rows[0]["recipe"])
    summary = {"metric": metric, "folds": folds, "recipes": rows, "grid": len(grid), "grid_full": full,
               "scores": len(scores), "trainings": ran, "side_by_side": len(workers),
               "seconds": time.perf_counter() - started, "winner": winner.name,
               "summary": f"{len(grid)} recipes, {folds}-fold cross-validation on the training and validation "
                          f"splits by {metric}, successive halving ({len(scores)} scores): {winner.name} won"}
    log_table(rows, log)
    del prepared, data, starts, first, workers
    gc.collect()
    if world.is_main:
        write_json(run_dir / "tuning.json", summary)
    cfg = replace(depth_settings(base, winner.trainable, n_layers), lr=winner.lr, lr_schedule=winner.schedule,
                  epochs=winner.epochs)
    log(f"tune: training the winner on the training split: {winner.name}")
    oof = out_of_fold(held_dir, winner, folds)
    fitted_on = {"temperature_fitted_on": f"the winner's out-of-fold scores ({len(oof[1]):,} texts of tune's "
                                          "folds, each scored by the fold model that did not train on it)"} if oof else {}
    metrics = train_run(model, weights, data_dir, cfg, run_dir, log=log,
                        tuning={k: summary[k] for k in ("metric", "folds", "grid", "scores", "winner")}
                        | {"cv_mean": rows[0]["mean"], "cv_std": rows[0]["std"]} | fitted_on, calibrate_on=oof)
    if world.is_main:  # train_run ends at a barrier: every process is done with them
        shutil.rmtree(run_dir / ".tuning", ignore_errors=True)
        partial.unlink(missing_ok=True)
    return metrics


def log_table(rows: list[dict], log) -> None:
    log(f"{'recipe':<46} {'mean':>8} {'spread':>8} folds")
    for row in rows:
        mean = "" if row["mean"] is None else f"{row['mean']:.4f}"
        log(f"{row['recipe']:<46} {mean:>8} {row['std']:8.4f} {row['folds']:>5}")
