"""`gptclassify train`: a new run, or an interrupted one resumed."""

from __future__ import annotations

import json

from ..distributed import barrier, current, restarted
from ..errors import UserError
from ..config import TrainConfig, make_config
from ..options import settings_of
from ..training.checkpoint import check_run_dir_free, clear_run_dir, has_checkpoint, resume_settings
from ..training.run import train_run


def cmd_train(args) -> None:
    if not args.resume and args.out is not None and restarted() and has_checkpoint(args.out):
        args.resume = args.out  # torchrun restarted the job after a failure: go on from the last epoch
    if args.resume:
        model, weights, data_dir, cfg = resume_settings(args.resume)
        metrics = train_run(model, weights, data_dir, cfg, args.resume, resume=True)
    else:
        if args.data is None or args.out is None:
            raise UserError("train needs --data DIR and --out RUN (or --resume RUN)")
        check_run_dir_free(args.out, args.overwrite)
        barrier()  # every process has looked before rank 0 clears
        if args.overwrite and current().is_main:
            clear_run_dir(args.out)
        cfg = make_config(args.preset, **{f.name: getattr(args, f.name) for f in settings_of(TrainConfig)
                                          if f.name != "preset" and f.metadata["cli"]})
        metrics = train_run(args.model, args.weights, args.data, cfg, args.out)
    if not current().is_main:
        return
    headline = ("accuracy", "macro_f1", "micro_f1", "subset_accuracy", "rmse", "mae", "r2", "loss")  # what each task has
    summary = {s: {k: metrics[s][k] for k in headline if k in metrics[s]} for s in ("train", "validation", "test")}
    print(json.dumps({**summary, "training": metrics["training"]}, indent=2))
