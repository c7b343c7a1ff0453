"""`gptclassify tune`: a recipe chosen by cross-validation, then trained as a normal run."""

from __future__ import annotations

import json
from dataclasses import replace

from ..config import TrainConfig, make_config
from ..distributed import barrier, current
from ..errors import UserError
from ..options import settings_of
from ..training.checkpoint import check_run_dir_free, clear_run_dir
from ..training.tune import tune_run
from ..training.tune_grid import parse_budget

CHOSEN = ("trainable", "epochs", "lr_schedule")  # what the grid decides (the rate: centred on --lr when given)


def cmd_tune(args) -> None:
    if args.data is None or args.out is None:
        raise UserError("tune needs --data DIR and --out RUN")
    given = flags_given(args, CHOSEN)
    if given:
        raise UserError(f"tune chooses {' and '.join(given)} itself; leave {them_or_it(given)} out")
    held = flags_given(args, ("keep_best", "select_by", "early_stopping"))
    if held:
        need = "need" if len(held) > 1 else "needs"
        raise UserError(f"tune trains its winner on the training and validation splits together (the folds hold "
                        f"every text out once); {' and '.join(held)} {need} a validation split held out: leave "
                        f"{them_or_it(held)} out")
    if args.folds < 2:
        raise UserError("--folds must be 2 or more")
    budget = parse_budget(args.budget)
    if not (args.out / "tuning.partial.json").is_file():  # else: the same command again goes on where it stopped
        check_run_dir_free(args.out, args.overwrite)
        barrier()  # every process has looked before rank 0 clears
        if args.overwrite and current().is_main:
            clear_run_dir(args.out)
    cfg = make_config(args.preset, **{f.name: getattr(args, f.name) for f in settings_of(TrainConfig)
                                      if f.name != "preset" and f.metadata["cli"]})
    if args.batch_order is None:  # the grid's deeper recipes read every position: padding is what they pay for
        cfg = replace(cfg, batch_order="by-length")
    metrics = tune_run(args.model, args.weights, args.data, cfg, args.out, args.folds, budget)
    if not current().is_main:
        return
    summary = {s: {k: v for k, v in metrics[s].items() if isinstance(v, float)} for s in ("validation", "test")}
    print(json.dumps(summary, indent=2))


def flags_given(args, names) -> list[str]:
    """The options of `names` given on the command line, as the user spelled them."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) not in (None, False)]


def them_or_it(flags: list[str]) -> str:
    return "them" if len(flags) > 1 else "it"
