"""`tune`'s grid of recipes and what it costs: the recipes in the order a budget keeps them, which
of them one training scores, successive halving's plan, and the grid cut to a budget from a probe's
timing (`trials.probe_seconds`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..classifier.metrics import lead_over
from ..config import TrainConfig
from ..errors import UserError

RATE_FACTORS = (1.0, 2.0, 0.5, 4.0, 0.25)  # times the family's rate, the likeliest first
CORE_FACTORS = 3  # the first three: every depth and schedule tries them before the outer two
DEPTHS = ("last-block", "last-2-blocks", "last-4-blocks", "lora")  # lora: adapters on the last LORA_BLOCKS blocks
EPOCHS = (5, 3)
LORA_BLOCKS = 2  # the same frozen prefix as last-2-blocks: one cached pass serves both
LORA_FACTORS = (1.0, 4.0)  # LoRA's rates, times the family's: at the grid's end, the first a budget cuts
FINALISTS = 2  # successive halving keeps at least this many recipes to the last fold
# Trials took up to 13% longer than the probe's steps said (their held-out scoring, the machine's
# other work; benchmarks/README.md): the budget plans for this much more.
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
    last block at the family's rate x 1, 2 and 1/2 on both schedules, then the last 2 and the last 4
    blocks on the family's schedule at those rates, then the outer rates (x 4, x 1/4), then LoRA."""
    grid = []
    for factors in (RATE_FACTORS[:CORE_FACTORS], RATE_FACTORS[CORE_FACTORS:]):
        for depth in (d for d in depths if d != "lora"):  # the last block on both schedules, deeper on the family's
            schedules = (schedule, other_schedule(schedule)) if depth == "last-block" else (schedule,)
            grid += [Recipe(depth, rate * f, s, e) for f in factors for e in EPOCHS for s in schedules]
    return grid + [Recipe("lora", rate * f, schedule, EPOCHS[0]) for f in LORA_FACTORS if "lora" in depths]


def survivors(alive: list[Recipe], means: dict, n: int, default: Recipe) -> list[Recipe]:
    """Successive halving's next fold: the `n` best by mean so far, and the default recipe (the
    grid's first) whatever its rank, so that the winner is compared with it on every fold."""
    kept = sorted(alive, key=lambda r: -means[r.name])[:n]
    return kept + [default] if default in alive and default not in kept else kept


def choose(best: Recipe, default: Recipe, best_scores: list[float], default_scores: list[float]) -> dict:
    """The winner: `best` (the best mean over every fold) only where it beats the default recipe by
    more than one standard error of their difference, fold by fold (the one-standard-error rule); a
    lead within the folds' noise keeps the default. What was compared, for tuning.json."""
    lead, se = lead_over(best_scores, default_scores)
    winner = best if best == default or lead > se else default
    return {"winner": winner, "default": default.name, "best": best.name, "lead": lead, "lead_se": se}


def scored(name: str, fold: int) -> str:
    """The key of a recipe's score on a fold (in `tuning.partial.json` and the held-out files' names)."""
    return f"{name}|{fold}"


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
class Costs:
    """What sizes the grid: seconds per step at each depth, steps per epoch of a fold's training and of
    the training and validation splits (the final run's), and how many trainings run side by side."""

    step_seconds: dict
    fold_steps: int
    final_steps: int
    side_by_side: int

    def training(self, recipes: list[Recipe], steps: int) -> float:
        return self.step_seconds[recipes[0].trainable] * steps * max(r.epochs for r in recipes)

    def folds(self, per_fold: list[list[Recipe]]) -> float:
        """Seconds to train these recipes on each of these folds, side by side."""
        seconds = sum(self.training(t, self.fold_steps) for alive in per_fold for t in trainings(alive))
        return MARGIN * seconds / self.side_by_side

    def cross_validation(self, grid: list[Recipe], folds: int) -> float:
        """Seconds successive halving is expected to take over `grid`: every recipe on the first fold,
        and on each later fold as many as go on at the grid's average cost (each later fold is cut
        to the time left when it comes: `fit_to_time`)."""
        return self.folds([grid]) * sum(planned_trainings(len(grid), folds)) / max(1, len(grid))

    def halving(self, alive: list[Recipe], default: Recipe, folds: int, least: bool = False) -> list[list[Recipe]]:
        """The recipes on each of `folds` folds from `alive` on, at worst: the dearest go on (and the
        default always); with `least`, only FINALISTS of them."""
        dearest = sorted(alive, key=lambda r: -self.training([r], self.fold_steps))
        counts = planned_trainings(len(alive), folds)[1:]
        return [alive] + [list(dict.fromkeys(dearest[:FINALISTS if least else n] + [default])) for n in counts]

    def final(self, grid: list[Recipe]) -> float:
        """The winner's training on the training and validation splits, at worst the dearest recipe's."""
        return max((self.training([r], self.final_steps) for r in grid), default=0.0)

    def at_worst(self, alive: list[Recipe], default: Recipe, folds: int, least: bool = False) -> float:
        """Seconds for `alive` on the next `folds` folds (`halving`, the dearest going on) and then the
        winner's training."""
        return self.folds(self.halving(alive, default, folds, least)) + self.final(alive)

    def whole(self, grid: list[Recipe], folds: int) -> float:
        """Seconds a budget must hold for `grid`: the trials as expected, or at least the first fold
        and the dearest FINALISTS on every later one (what `fit_to_time` can always cut down to),
        then the winner's training."""
        least = self.at_worst(grid, grid[0], folds, least=True) if grid else 0.0
        return max(self.cross_validation(grid, folds) + self.final(grid), least)


def fit_to_time(alive: list[Recipe], default: Recipe, folds: int, seconds: float | None, costs: Costs) -> list[Recipe]:
    """Successive halving's next `folds` folds within `seconds`: `alive` (the best first) less its
    worst, one by one, until at worst they fit with the winner's training; never fewer than
    FINALISTS, the default among them."""
    kept = list(alive)
    while seconds is not None and len(kept) > FINALISTS and costs.at_worst(kept, default, folds) > seconds:
        kept.remove(next(r for r in reversed(kept) if r != default))
    return kept


def sized_to(grid: list[Recipe], seconds: float | None, folds: int, costs: Costs) -> list[Recipe]:
    """The recipes, in the grid's order, that fit in `seconds` with the final training (each one
    that would pass it left out; the first two always kept)."""
    if seconds is None:
        return grid
    kept = []
    for r in grid:
        if len(kept) < FINALISTS or costs.whole(kept + [r], folds) <= seconds:
            kept.append(r)
    return kept
