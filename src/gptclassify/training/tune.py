"""`gptclassify tune`: the recipe chosen by k-fold cross-validation on the cached features, then
trained on the whole training split as a normal run.

1. One frozen pass that keeps the states every trainable depth of the grid starts from (entering the
   last block, the last 2 blocks) in the on-disk feature cache: each depth's trials, the final
   `train` and later runs read them there.
2. Folds: the training and validation splits together, stratified (`data.folds`); the test split is
   never scored.
3. The grid: learning rate (the model family's rate x 1/4 to 4) x trainable depth x epochs, ordered
   by how likely each is to win (the family's rate and the last block first), then LoRA on the last
   2 blocks at the family's rate x 1 and x 4 (it reads the last-2-blocks pass); sized to `--budget`
   from a timed probe of each depth, the cost said before it starts (LoRA is the first cut).
4. Successive halving over the folds: every recipe is scored on the first fold, the better half goes
   on to the next fold, and so on (never fewer than two), so the finalists have every fold and a
   losing recipe costs a fold or two. Each finished (recipe, fold) is written at once: a killed
   `tune` run again continues after it, to the same table.
5. The winner (best mean over all folds) is trained on the training split as `train` would, and its
   run says it was tuned; `tuning.json` holds every recipe's mean, spread and scores.

Under torchrun the trials are shared out, not the examples: every process holds every example
(rank 0 makes the frozen passes, the others read them from the on-disk cache), each fold's trials
go round the processes, and their scores are gathered after each round, so the table is the one a
single process makes. The winner then trains data-parallel, as `train` under torchrun does.
"""

from __future__ import annotations

import gc
import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from ..classifier.tasks import HEADLINES, headline
from ..config import TrainConfig
from ..data.folds import stratified_folds
from ..distributed import World, all_gather_objects, alone, barrier, current
from ..errors import UserError
from ..failpoints import failpoint
from ..files import read_json, write_json
from ..hub import sha256_file
from .prepare import Prepared, prepare
from .run import train_run
from .steps import calc_loss_batch, make_optimizer

RATE_FACTORS = (1.0, 2.0, 0.5, 4.0, 0.25)  # times the family's rate, the likeliest first
DEPTHS = ("last-block", "last-2-blocks", "lora")  # lora: adapters on the last LORA_BLOCKS blocks (and the head)
EPOCHS = (5, 3)
LORA_BLOCKS = 2  # the same frozen prefix as last-2-blocks: one cached pass serves both
LORA_FACTORS = (1.0, 4.0)  # LoRA's rates, times the family's: at the grid's end, the first a budget cuts
FINALISTS = 2  # successive halving keeps at least this many recipes to the last fold
PROBE_STEPS = 10


@dataclass(frozen=True)
class Recipe:
    trainable: str
    lr: float
    schedule: str
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.trainable}, lr {self.lr:.3g}, {self.schedule}, {self.epochs} epochs"


def make_grid(rate: float, schedule: str, depths: tuple[str, ...]) -> list[Recipe]:
    """Every recipe, the likeliest winners first (what a budget keeps); LoRA's last."""
    plain = [Recipe(depth, rate * f, schedule, epochs) for f in RATE_FACTORS for depth in depths if depth != "lora"
             for epochs in EPOCHS]
    return plain + [Recipe("lora", rate * f, schedule, EPOCHS[0]) for f in LORA_FACTORS if "lora" in depths]


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


def trial(p: Prepared, start: dict, data, train_rows: list[int], held_rows: list[int], recipe: Recipe,
          max_steps: int | None = None) -> float:
    """Train `recipe` from the starting weights on `train_rows`; its headline score on `held_rows`."""
    cfg = replace(p.cfg, lr=recipe.lr, lr_schedule=recipe.schedule, epochs=recipe.epochs)
    model = p.model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in start:
                param.copy_(start[name])
    torch.manual_seed(cfg.seed)
    loader = DataLoader(Subset(data, train_rows), batch_size=cfg.batch_size, shuffle=True, collate_fn=p.inputs.collate)
    optimizer, scheduler = make_optimizer(model, cfg, cfg.epochs * len(loader))
    params, steps = [q for q in model.parameters() if q.requires_grad], 0
    model.train()
    for _ in range(cfg.epochs):
        for batch in loader:
            optimizer.zero_grad()
            calc_loss_batch(batch, p.logits_fn, p.device, huber=cfg.loss == "huber").backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            steps += 1
            if max_steps and steps >= max_steps:
                break
    if max_steps:  # a timing probe
        return float("nan")
    model.eval()
    return held_out_score(p, data, held_rows)


@torch.no_grad()
def held_out_score(p: Prepared, data, rows: list[int]) -> float:
    logits, targets = [], []
    for batch in DataLoader(Subset(data, rows), batch_size=64, collate_fn=p.inputs.collate):
        inputs, target, *rest = batch
        logits.append(p.logits_fn(inputs.to(p.device), *(t.to(p.device) for t in rest)).float().cpu())
        targets.append(target)
    return headline(p.task, torch.cat(logits), torch.cat(targets))[1]


def setup_key(model, weights, data_dir: Path, base: TrainConfig, folds: int, grid: list[Recipe]) -> dict:
    """What a partial tuning was made from: its trials are reused only for the same."""
    return {"model": model, "weights": weights, "data": {s: sha256_file(data_dir / f"{s}.csv")
                                                         for s in ("train", "validation")},
            "base": asdict(base), "folds": folds, "grid": [r.name for r in grid]}


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


def probe_seconds(prepared: dict[str, Prepared], starts: dict, data: dict, rows: list[int]) -> dict[str, float]:
    """Seconds per training step at each depth, timed on a few steps (the weights put back after)."""
    out = {}
    for depth, p in prepared.items():
        probe = Recipe(depth, p.cfg.lr, p.cfg.lr_schedule, 1)
        started = time.perf_counter()
        trial(p, starts[depth], data[depth], rows, [], probe, max_steps=PROBE_STEPS)
        out[depth] = (time.perf_counter() - started) / min(PROBE_STEPS, math.ceil(len(rows) / p.cfg.batch_size))
    return out


def estimate(grid: list[Recipe], folds: int, step_seconds: dict, steps_per_epoch: int) -> float:
    """Seconds successive halving takes over `grid` (recipes dropped in grid order, as a stand-in)."""
    return sum(step_seconds[r.trainable] * steps_per_epoch * r.epochs for n in planned_trainings(len(grid), folds)
               for r in grid[:n])


def sized_to(grid: list[Recipe], budget: float | None, folds: int, step_seconds: dict, steps_per_epoch: int):
    """The longest prefix of the grid whose estimate fits the budget (two recipes at least)."""
    if budget is None:
        return grid
    n = len(grid)
    while n > FINALISTS and estimate(grid[:n], folds, step_seconds, steps_per_epoch) > budget:
        n -= 1
    return grid[:n]


def cross_validate(prepared, starts, data, folds, grid, scores: dict, save, log, world: World = World()) -> dict:
    """Successive halving over the folds; `scores[(recipe name, fold)]` filled in, saved after each
    round of trials (one per process: the recipes still to score on a fold go round the processes)."""
    alive = list(grid)
    for k, held in enumerate(folds):
        rest = [i for j, f in enumerate(folds) if j != k for i in f]
        todo = [r for r in alive if f"{r.name}|{k}" not in scores]
        for at in range(0, len(todo), world.size):
            part, done = todo[at:at + world.size], {}
            if world.rank < len(part):
                r = part[world.rank]
                done[f"{r.name}|{k}"] = trial(prepared[r.trainable], starts[r.trainable], data[r.trainable], rest,
                                              held, r)
            for got in all_gather_objects(done):
                scores.update(got)
            if world.is_main:
                save(scores)
            failpoint("tune-trial")
        means = {r.name: mean_of(scores, r, k + 1) for r in alive}
        best = max(alive, key=lambda r: means[r.name])
        log(f"tune: fold {k + 1}/{len(folds)}: {len(alive)} recipes; best so far {best.name} "
            f"({means[best.name]:.4f})")
        if k < len(folds) - 1:
            alive = sorted(alive, key=lambda r: -means[r.name])[:planned_trainings(len(grid), len(folds))[k + 1]]
    return scores


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
    """Cross-validate the grid, write tuning.json, train the winner into `run_dir`; its metrics."""
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
    n_layers = len(first.model.trf_blocks)
    steps_per_epoch = math.ceil(len(targets) * (folds - 1) / folds / base.batch_size)
    step_seconds = all_gather_objects(probe_seconds(prepared, starts, data, fold_rows[0]) if world.is_main
                                      else None)[0]  # rank 0's timing sizes the grid everywhere
    full = len(grid)
    grid = sized_to(grid, budget, folds, step_seconds, steps_per_epoch)
    trainings = sum(planned_trainings(len(grid), folds))
    shared = f", shared by {world.size} processes" if world.size > 1 else ""
    log(f"tune: {len(grid)} recipes{f' of {full} (--budget)' if len(grid) < full else ''}, {folds} folds of "
        f"{len(targets):,} texts (the test split is not read), successive halving: {trainings} trainings, about "
        f"{estimate(grid, folds, step_seconds, steps_per_epoch) / 60 / world.size:.1f} min{shared}")
    partial = run_dir / "tuning.partial.json"
    key = setup_key(model, weights, data_dir, base, folds, grid)
    scores = {}
    if partial.is_file() and read_json(partial).get("key") == key:
        scores = read_json(partial)["scores"]
        log(f"tune: {len(scores)} finished trainings read back from {partial.name}")
    cross_validate(prepared, starts, data, fold_rows, grid, scores,
                   lambda s: write_json(partial, {"key": key, "scores": s}), log, world)
    metric = HEADLINES[first.task]
    rows = table(grid, scores, folds, metric)
    winner = next(r for r in grid if r.name == rows[0]["recipe"])
    summary = {"metric": metric, "folds": folds, "recipes": rows, "grid": len(grid), "grid_full": full,
               "trainings": len(scores), "seconds": time.perf_counter() - started, "winner": winner.name,
               "summary": f"{len(grid)} recipes, {folds}-fold cross-validation on the training and validation "
                          f"splits by {metric}, successive halving ({len(scores)} trainings): {winner.name} won"}
    log_table(rows, log)
    del prepared, data, starts, first
    gc.collect()
    if world.is_main:
        write_json(run_dir / "tuning.json", summary)
    cfg = replace(depth_settings(base, winner.trainable, n_layers), lr=winner.lr, lr_schedule=winner.schedule,
                  epochs=winner.epochs)
    log(f"tune: training the winner on the training split: {winner.name}")
    metrics = train_run(model, weights, data_dir, cfg, run_dir, log=log,
                        tuning={k: summary[k] for k in ("metric", "folds", "grid", "trainings", "winner")}
                        | {"cv_mean": rows[0]["mean"], "cv_std": rows[0]["std"]})
    if world.is_main:  # train_run ends at a barrier: every process is done with them
        shutil.rmtree(run_dir / ".tuning", ignore_errors=True)
        partial.unlink(missing_ok=True)
    return metrics


def log_table(rows: list[dict], log) -> None:
    log(f"{'recipe':<46} {'mean':>8} {'spread':>8} folds")
    for row in rows:
        mean = "" if row["mean"] is None else f"{row['mean']:.4f}"
        log(f"{row['recipe']:<46} {mean:>8} {row['std']:8.4f} {row['folds']:>5}")
