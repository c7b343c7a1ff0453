"""Checkpoints for `--resume`, safe against being killed at any moment.

RUN/checkpoint/ holds snapshots (`snapshot-00000042/`: the trainable weights, the optimizer's
state, the RNG state and, mid-epoch, the epoch's data order as safetensors; where training stands,
the schedule's position and the run's settings as JSON) and `latest.json`, which names the newest
complete one. A snapshot is written whole in a hidden folder, renamed into place, and only then
made the latest (one atomic rename of `latest.json`); older snapshots are removed after that. So a
process killed at any moment, or a write that fails (a full disk), leaves the previous snapshot in
force. The first snapshot, written before the frozen pass, holds only the run's settings: a run
killed before its first step resumes from the start. Nothing here depends on the number of
processes, so a run resumes on any number of them.
"""

from __future__ import annotations

import shutil
from itertools import accumulate
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UserError
from ..failpoints import failpoint
from ..files import load_safetensors, read_json, save_safetensors, write_json
from ..config import TrainConfig
from .steps import TrainState


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_start(ckpt: Path, cfg: TrainConfig, run: dict) -> None:
    """The first snapshot: the run's settings, nothing trained yet."""
    write_snapshot(ckpt, "snapshot-00000000", {"state.json": {"run": run, "train_state": None,
                                                              "train_config": asdict(cfg)}})


def save_checkpoint(ckpt: Path, model, optimizer, scheduler, state: TrainState, cfg: TrainConfig, run: dict,
                    order: list[list[int]] | None = None) -> None:
    """A snapshot of training after `state.global_step` steps; `order` is the epoch's data order
    when the snapshot is taken mid-epoch."""
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    opt_tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from the GPU's RNG
        opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
    files = {"trainable.safetensors": trainable_state(model), "optimizer.safetensors": opt_tensors,
             "state.json": {"run": run, "train_state": state.to_dict(), "optimizer": opt_meta,
                            "scheduler": scheduler.state_dict(), "train_config": asdict(cfg)}}
    if order is not None:
        files["order.safetensors"] = {"indices": torch.tensor([i for batch in order for i in batch], dtype=torch.int64),
                                      "sizes": torch.tensor([len(batch) for batch in order], dtype=torch.int64)}
    write_snapshot(ckpt, f"snapshot-{state.global_step:08d}", files)


def save_best(ckpt: Path, model) -> None:
    save_safetensors(trainable_state(model), ckpt / "best.safetensors")


def write_snapshot(ckpt: Path, name: str, files: dict) -> None:
    tmp = ckpt / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for filename, content in files.items():
            if filename.endswith(".json"):
                write_json(tmp / filename, content)
            else:
                save_safetensors(content, tmp / filename)
        shutil.rmtree(ckpt / name, ignore_errors=True)  # a complete but never-latest one, from a killed save
        tmp.rename(ckpt / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failpoint("checkpoint")
    write_json(ckpt / "latest.json", {"snapshot": name})
    for old in ckpt.iterdir():  # earlier snapshots, and any a killed save left behind
        if old.name != name and (old.name.startswith("snapshot-") or old.name.endswith(".tmp")):
            shutil.rmtree(old, ignore_errors=True)


def latest_snapshot(ckpt: Path) -> Path:
    """The snapshot in force; a checkpoint from before snapshots is its own."""
    if (ckpt / "latest.json").is_file():
        name = str(read_json(ckpt / "latest.json").get("snapshot", ""))
        if not name.startswith("snapshot-") or "/" in name or not (ckpt / name / "state.json").is_file():
            raise UserError(f"{ckpt}/latest.json: names no complete snapshot ({name!r})")
        return ckpt / name
    return ckpt


def load_trainable(model, path: Path) -> None:
    """Copy saved trainable weights (an epoch checkpoint or the best epoch) into the model."""
    saved = load_safetensors(path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                if name not in saved:
                    raise UserError(f"{path}: lacks {name!r} (made with another --trainable?)")
                p.copy_(saved[name])


def restore_checkpoint(ckpt: Path, model, optimizer, scheduler) -> tuple[TrainState, list | None] | None:
    """Training as the latest snapshot left it, and the epoch's data order if it was taken
    mid-epoch; None when it is the first snapshot (nothing trained yet)."""
    snapshot = latest_snapshot(ckpt)
    meta = read_json(snapshot / "state.json")
    if meta.get("train_state") is None:
        return None
    load_trainable(model, snapshot / "trainable.safetensors")
    tensors = load_safetensors(snapshot / "optimizer.safetensors")
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda_rng = tensors.pop("rng.cuda", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    order = None
    if (snapshot / "order.safetensors").is_file():
        saved = load_safetensors(snapshot / "order.safetensors")
        flat, sizes = saved["indices"].tolist(), saved["sizes"].tolist()
        ends = list(accumulate(sizes))
        order = [flat[end - n: end] for end, n in zip(ends, sizes)]
    return TrainState(**meta["train_state"]), order


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
    ckpt = Path(run_dir) / "checkpoint"
    return (ckpt / "latest.json").is_file() or (ckpt / "state.json").is_file()


def resume_settings(run_dir: Path) -> tuple[str | None, str, Path, TrainConfig]:
    """Model, weights, data and training settings of an interrupted run."""
    if not has_checkpoint(run_dir):
        raise UserError(f"{run_dir}: no checkpoint to resume from (expected {Path(run_dir) / 'checkpoint'})")
    path = latest_snapshot(Path(run_dir) / "checkpoint") / "state.json"
    saved = read_json(path)
    if isinstance(saved.get("run"), dict) and saved["run"].get("train_on"):
        raise UserError(f"{run_dir}: `gptclassify tune` was training its winner here when it stopped; run the same "
                        "tune command again (it reads its finished folds back and trains the winner anew)")
    try:
        run = saved["run"]
        # the model as the user named it (None: taken from the weights); older checkpoints kept only the name
        model = run["model"] if "model" in run else run["model_name"] if run["weights"] == "random" else None
        return model, run["weights"], Path(run["data"]), TrainConfig.from_json(saved["train_config"], str(path))
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not a gptclassify checkpoint ({e})") from None

