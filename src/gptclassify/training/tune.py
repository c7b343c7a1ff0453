"""`gptclassify tune`: the recipe chosen by k-fold cross-validation on the cached features, then
trained on the whole training split as a normal run.

1. One frozen pass that keeps the states every trainable depth of the grid starts from (entering the
   last block, the last 2 and the last 4 blocks) in the on-disk feature cache: each depth's trials,
   the final `train` and later runs read them there.
2. Folds: the training and validation splits together, stratified (`data.folds`); the test split is
   never scored.
3. The grid: the model family's rate (x 1, 2, 1/2, then 4, 1/4) x schedule (the family's and the
   other) x trainable depth x epochs, the likeliest and cheapest first, then LoRA on the last 2
   blocks (it reads the last-2-blocks states); sized to `--budget` (the whole tune's time) from a
   timed probe of each depth, the cost said before it starts (the dear depths are left out first),
   planning for the recipes that go on to cost the grid's average, and for the worst that the cut
   of step 5 can always come down to.
4. Cheap trials: batches of texts of similar length (`--batch-order by-length`, tune's default: the
   deeper depths compute every position, padding too); at a constant rate one training scores its
   3- and 5-epoch recipes (`trainings`);
   on a CPU the trials run side by side, one kernel thread each (`run_side_by_side`), the frozen
   weights shared and each its own trainable copy (`replica`) and data order.
5. Successive halving over the folds: every recipe is scored on the first fold, the better half goes
   on to the next fold, and so on (never fewer than two), so the finalists have every fold and a
   losing recipe costs a fold or two. Under `--budget`, the recipes going on to a fold are cut, the
   worst first, to what fits the time left, planning for the dearest of them to go on (the log says
   so). Each finished (recipe, fold) is written at once, its held-out logits beside it, and which
   recipes go on to each fold: a killed `tune` run again continues after it, to the same table.
6. The winner (best mean over all folds) is trained as `train` would, on the training and validation
   splits together (as scikit-learn's GridSearchCV refits on all it searched: the folds already held
   every text out once). Its out-of-fold logits (every training and validation text, each scored by
   the fold model that did not train on it) stand in for the validation split: the temperature is
   fitted on them and metrics.json's validation scores are theirs. Its run says it was tuned;
   `tuning.json` holds every recipe's mean, spread and scores.

Under torchrun the trials are shared out, not the examples: every process holds every example
(rank 0 makes the frozen pass, the others read it from the on-disk cache), each fold's trials go
round the processes, and their results are gathered after the fold, so the table is the one a
single process makes. The winner then trains data-parallel, as `train` under torchrun does.
"""

from __future__ import annotations

import gc
import hashlib
import math
import shutil
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset

from ..classifier.head import release_prefix
from ..classifier.names import blocks_trained
from ..classifier.tasks import HEADLINES
from ..config import TrainConfig
from ..data.folds import stratified_folds
from ..distributed import World, all_gather_objects, alone, barrier, current
from ..errors import UserError
from ..failpoints import failpoint
from ..files import read_json, save_safetensors, write_json
from ..hub import sha256_file
from .prepare import Prepared, prepare
from .run import train_run
from .trials import Worker, make_workers, parallel_trials, probe_seconds, run_side_by_side, targets_of
from .tune_grid import (DEPTHS, LORA_BLOCKS, Costs, Recipe, choose, depth_settings, fit_to_time, make_grid,
                        planned_trainings, scored, sized_to, survivors, trainings)


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
        if depth != "lora" and (deepest or n_layers and blocks_trained(depth) > n_layers):  # no block left to freeze
            continue
        p = prepare(model, weights, data_dir, depth_settings(base, depth, n_layers), run_dir / ".tuning" / depth, log,
                    also_keep=others if not prepared else ())
        prepared[depth], n_layers = p, len(p.model.trf_blocks)
        deepest = deepest or p.classifier.start <= 0
        if p.inputs.cached:  # the trials read the cached states: the frozen weights are never run again
            release_prefix(p.model, p.classifier.start)
    return prepared


def cross_validate(prepared, workers: list[Worker], threads: int, starts, data, folds, grid, scores: dict, record,
                   log, world: World = World(), cut=None, decided: dict | None = None) -> int:
    """Successive halving over the folds; `scores[scored(recipe name, fold)]` filled in. Each fold's
    trainings are shared out between the processes and, in each, run side by side by its workers.
    `record(results)` keeps each result (score, held-out logits and targets) as it comes when alone,
    under torchrun after the fold (gathered on every process). `cut(alive, folds left)`: the recipes
    that go on within the time left (`fit_to_time`); `decided` (fold -> names, kept by `record({})`)
    holds what went on to each fold, so that a resumed tune goes on with the same. Returns how many
    trainings ran."""
    alive, ran, decided = list(grid), 0, {} if decided is None else decided
    for k, held in enumerate(folds):
        rest = [i for j, f in enumerate(folds) if j != k for i in f]
        todo = trainings([r for r in alive if scored(r.name, k) not in scores])
        done = run_side_by_side(todo[world.rank::world.size], prepared, workers, threads, starts, data, rest, held,
                                record if world.size == 1 else None, k)
        ran += len(todo)
        if world.size > 1:
            for got in all_gather_objects(done):
                record(got)
        means = {r.name: mean_of(scores, r, k + 1) for r in alive}
        best = min(alive, key=lambda r: (-means[r.name], grid.index(r)))  # ties: the grid's order, as `table`'s
        log(f"tune: fold {k + 1}/{len(folds)}: {len(alive)} recipes; best so far {best.name} "
            f"({means[best.name]:.4f})")
        if k < len(folds) - 1:
            alive = going_on(alive, means, grid, k + 1, len(folds), cut, decided, record, log)
    return ran


def going_on(alive: list[Recipe], means: dict, grid: list[Recipe], fold: int, folds: int, cut, decided: dict, record,
             log) -> list[Recipe]:
    """The recipes trained on `fold`: those a resumed tune had decided on, else successive halving's
    and, where `cut` says so, fewer (said, and recorded at once)."""
    if str(fold) in decided:
        named = {r.name: r for r in grid}
        return [named[name] for name in decided[str(fold)]]
    halved = survivors(alive, means, planned_trainings(len(grid), folds)[fold], grid[0])
    kept = halved if cut is None else cut(halved, folds - fold)
    if len(kept) < len(halved):
        log(f"tune: {len(kept)} recipes go on to fold {fold + 1}, not {len(halved)}: the rest would pass the budget")
    decided[str(fold)] = [r.name for r in kept]
    record({})
    return kept


def recorder(scores: dict, partial: Path, header: dict, held_dir: Path, is_main: bool):
    """What keeps each finished result: its score in `scores` and in the partial table (written at once
    by rank 0, with `header`), its held-out logits in `held_dir`; a killed tune goes on after it.
    `record({})` writes the partial table again (`header` changed)."""
    def record(results: dict) -> None:
        scores.update({name: score for name, (score, _, _) in results.items()})
        for name, (_, logits, targets) in results.items():  # every process (under torchrun, its own disk's)
            save_safetensors({"logits": logits.contiguous(), "targets": targets.contiguous()},
                             held_out_file(held_dir, name))
        if is_main:
            write_json(partial, {**header, "scores": scores})
        if results:
            failpoint("tune-trial")
    return record


def held_out_file(held_dir: Path, name: str) -> Path:
    return held_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.safetensors"


def out_of_fold(held_dir: Path, winner: Recipe, folds: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The winner's logits and targets on every training and validation text, each from the fold
    model that did not train on it; None when one fold's are missing."""
    files = [held_out_file(held_dir, scored(winner.name, k)) for k in range(folds)]
    if not all(f.is_file() for f in files):
        return None
    parts = [load_file(f) for f in files]
    return torch.cat([t["logits"] for t in parts]), torch.cat([t["targets"] for t in parts])


def mean_of(scores: dict, r: Recipe, folds: int) -> float:
    return statistics.fmean(scores[scored(r.name, k)] for k in range(folds))


def table(grid: list[Recipe], scores: dict, folds: int, metric: str) -> list[dict]:
    """Every recipe with its scores, the finalists (every fold) first by mean, then the rest by mean."""
    rows = []
    for r in grid:
        got = [scores[scored(r.name, k)] for k in range(folds) if scored(r.name, k) in scores]
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
    targets = targets_of(first)
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
                  math.ceil(len(targets) / base.batch_size), side * world.size)  # the winner: every fold text
    partial = run_dir / "tuning.partial.json"
    key = setup_key(model, weights, data_dir, base, folds, grid, budget)
    left = None if budget is None else budget - (time.perf_counter() - started)
    grid, scores, decided = resumed_or_sized(partial, key, grid, left, folds, costs, log, world)
    workers = workers[:max(1, min(side, len(grid)))]
    log_plan(grid, full, folds, len(targets), costs, len(workers), world.size, log)
    held_dir, trials_started = run_dir / ".tuning" / "held-out", time.perf_counter()
    ran = cross_validate(prepared, workers, threads, starts, data, fold_rows, grid, scores,
                         recorder(scores, partial, {"key": key, "grid": [r.name for r in grid], "alive": decided},
                                  held_dir, world.is_main), log, world,
                         cut=within(started + budget if budget else None, grid[0], costs, world), decided=decided)
    log(f"tune: {ran} trainings in {(time.perf_counter() - trials_started) / 60:.1f} min (planned: about "
        f"{costs.cross_validation(grid, folds) / 60:.1f})")
    winner, rows, summary = chosen_recipe(grid, scores, folds, HEADLINES[first.task], log)
    summary.update(grid_full=full, trainings=ran, side_by_side=len(workers), seconds=time.perf_counter() - started,
                   per_fold=[len(grid)] + [len(decided[str(k)]) for k in range(1, folds)])
    del prepared, data, starts, first, workers
    gc.collect()
    if world.is_main:
        write_json(run_dir / "tuning.json", summary)
    log(f"tune: training the winner: {winner.name}")
    won = next(row for row in rows if row["recipe"] == winner.name)
    metrics = train_winner(model, weights, data_dir, base, run_dir, winner, n_layers, held_dir,
                           {k: summary[k] for k in ("metric", "folds", "grid", "scores", "winner")}
                           | {"cv_mean": won["mean"], "cv_std": won["std"]}, log)
    if world.is_main:  # train_run ends at a barrier: every process is done with them
        shutil.rmtree(run_dir / ".tuning", ignore_errors=True)
        partial.unlink(missing_ok=True)
    return metrics


def chosen_recipe(grid: list[Recipe], scores: dict, folds: int, metric: str, log) -> tuple[Recipe, list[dict], dict]:
    """The winner (`choose`: the best mean, where it beats the default by more than the folds' noise),
    the table (printed) and what tuning.json says of them."""
    rows = table(grid, scores, folds, metric)
    best = next(r for r in grid if r.name == rows[0]["recipe"])
    chosen = choose(best, grid[0], *([scores[scored(r.name, k)] for k in range(folds)] for r in (best, grid[0])))
    winner = chosen.pop("winner")
    log_table(rows, log)
    outcome = "won"
    if winner != best:
        outcome = (f"kept ({best.name} led it by {chosen['lead']:.4f}, within one standard error, "
                   f"{chosen['lead_se']:.4f})")
        log(f"tune: {best.name} leads the default by {chosen['lead']:.4f} ± {chosen['lead_se']:.4f} (one standard "
            "error over the folds): within the noise, the default is kept")
    return winner, rows, {
        "metric": metric, "folds": folds, "recipes": rows, "grid": len(grid), "scores": len(scores),
        "winner": winner.name, "against_default": chosen,
        "summary": f"{len(grid)} recipes, {folds}-fold cross-validation on the training and validation splits by "
                   f"{metric}, successive halving ({len(scores)} scores): {winner.name} {outcome}"}


def resumed_or_sized(partial: Path, key: dict, grid: list[Recipe], seconds: float | None, folds: int, costs: Costs,
                     log, world: World) -> tuple[list[Recipe], dict, dict]:
    """The grid, the finished scores and the recipes that went on to each fold of the same command's
    partial tuning (rank 0's, shared), or the grid cut to `seconds` and nothing done."""
    saved = all_gather_objects(read_json(partial) if world.is_main and partial.is_file() else None)[0]
    if saved and saved.get("key") == key:
        log(f"tune: {len(saved['scores'])} finished scores read back from {partial.name}")
        return [r for r in grid if r.name in set(saved["grid"])], saved["scores"], saved.get("alive", {})
    return sized_to(grid, seconds, folds, costs), {}, {}


def within(deadline: float | None, default: Recipe, costs: Costs, world: World):
    """`cross_validate`'s `cut`: the recipes that go on, cut to what rank 0's clock says is left of
    the budget (every process cuts the same); None without a budget."""
    if deadline is None:
        return None

    def cut(alive: list[Recipe], folds: int) -> list[Recipe]:
        left = all_gather_objects(deadline - time.perf_counter() if world.is_main else None)[0]
        return fit_to_time(alive, default, folds, left, costs)
    return cut


def train_winner(model, weights, data_dir: Path, base: TrainConfig, run_dir: Path, winner: Recipe, n_layers: int,
                 held_dir: Path, tuning: dict, log) -> dict:
    """`train` with the winner's recipe on the training and validation splits, calibrated on its
    out-of-fold logits, when every fold's are there (else on the training split, as `train`)."""
    cfg = replace(depth_settings(base, winner.trainable, n_layers), lr=winner.lr, lr_schedule=winner.schedule,
                  epochs=winner.epochs)
    oof = out_of_fold(held_dir, winner, tuning["folds"])
    if oof:
        tuning = tuning | {"temperature_fitted_on": f"the winner's out-of-fold scores ({len(oof[1]):,} texts of "
                                                    "tune's folds, each scored by the fold model that did not "
                                                    "train on it)",
                           "trained_on": "the training and validation splits"}
        log(f"tune: the winner trains on the training and validation splits ({len(oof[1]):,} texts); its "
            "out-of-fold scores stand in for the validation split's")
    return train_run(model, weights, data_dir, cfg, run_dir, log=log, tuning=tuning, calibrate_on=oof)


def log_plan(grid: list[Recipe], full: int, folds: int, texts: int, costs: Costs, side: int, processes: int,
             log) -> None:
    alongside = f", {side} at a time" if side > 1 else ""
    shared = f", shared by {processes} processes" if processes > 1 else ""
    log(f"tune: {len(grid)} recipes{f' of {full} (--budget)' if len(grid) < full else ''}, {folds} folds of "
        f"{texts:,} texts (the test split is not read), successive halving: about "
        f"{costs.cross_validation(grid, folds) / 60:.1f} min of trials{alongside}{shared}, then about "
        f"{costs.final(grid) / 60:.1f} min for the winner's training (a step: "
        + ", ".join(f"{d} {s * 1000:.0f} ms" for d, s in costs.step_seconds.items()) + ")")


def log_table(rows: list[dict], log) -> None:
    log(f"{'recipe':<46} {'mean':>8} {'spread':>8} folds")
    for row in rows:
        mean = "" if row["mean"] is None else f"{row['mean']:.4f}"
        log(f"{row['recipe']:<46} {mean:>8} {row['std']:8.4f} {row['folds']:>5}")
