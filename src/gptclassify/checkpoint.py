"""Checkpoints for `--resume`: after every finished epoch, RUN/checkpoint/ holds the trainable
weights, the optimizer's state and the RNG state (safetensors) and the rest as JSON: where
training stands, the learning-rate schedule's position, and the settings the run was started
with. None of it depends on the number of processes, so a run resumes on any number of them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .errors import UserError
from .files import load_safetensors, read_json, save_safetensors, write_json
from .train import TrainConfig, TrainState


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt: Path, model, optimizer, scheduler, state: TrainState, cfg: TrainConfig, run: dict,
                    improved: bool) -> None:
    """Write the checkpoint; `best.safetensors` too when this epoch is the best so far (--keep-best)."""
    trainable = trainable_state(model)
    save_safetensors(trainable, ckpt / "trainable.safetensors")
    if improved and cfg.keep_best:
        save_safetensors(trainable, ckpt / "best.safetensors")
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    opt_tensors["rng.torch"] = torch.get_rng_state()
    save_safetensors(opt_tensors, ckpt / "optimizer.safetensors")
    write_json(ckpt / "state.json", {"run": run, "train_state": state.to_dict(), "optimizer": opt_meta,
                                     "scheduler": scheduler.state_dict(), "train_config": asdict(cfg)})


def load_trainable(model, path: Path) -> None:
    """Copy saved trainable weights (an epoch checkpoint or the best epoch) into the model."""
    saved = load_safetensors(path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                if name not in saved:
                    raise UserError(f"{path}: lacks {name!r} (made with another --trainable?)")
                p.copy_(saved[name])


def restore_checkpoint(ckpt: Path, model, optimizer, scheduler) -> TrainState:
    meta = read_json(ckpt / "state.json")
    load_trainable(model, ckpt / "trainable.safetensors")
    tensors = load_safetensors(ckpt / "optimizer.safetensors")
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    return TrainState(**meta["train_state"])


def flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """An optimizer state dict as safetensors tensors plus JSON (no pickle)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def check_run_dir_free(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to train into a directory that already holds a run, unless told to replace it."""
    taken = [name for name in ("model.safetensors", "config.json", "checkpoint") if (Path(run_dir) / name).exists()]
    if taken and not overwrite:
        raise UserError(f"{run_dir} already holds a run ({taken[0]}); continue it with --resume, "
                        "or replace it with --overwrite")


def clear_run_dir(run_dir: Path) -> None:
    """With --overwrite: take away the old run's marks of a finished run and its checkpoint first,
    so a new run that fails early leaves nothing that looks finished or resumable."""
    import shutil

    run_dir = Path(run_dir)
    for name in ("config.json", "model.safetensors"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / "checkpoint" / "state.json").is_file()


def resume_settings(run_dir: Path) -> tuple[str, str, Path, TrainConfig]:
    """Model, weights, data and training settings of an interrupted run."""
    path = Path(run_dir) / "checkpoint" / "state.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoint to resume from (expected {path})")
    saved = read_json(path)
    try:
        run = saved["run"]
        settings = {"lr_schedule": "constant", **saved["train_config"]}  # checkpoints from before schedules
        return run["model_name"], run["weights"], Path(run["data"]), TrainConfig(**settings)
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not a gptclassify checkpoint ({e})") from None
