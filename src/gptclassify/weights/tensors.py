"""Putting a state dict into a model: read a safetensors file, make the model without
initialising it, and assign every tensor after checking it by name and shape."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UserError
from ..files import load_safetensors as read_safetensors
from ..files import read_json

__all__ = ["assign_checked", "build_model", "read_checkpoint", "read_safetensors", "read_shard_index", "uninitialised"]


@contextlib.contextmanager
def uninitialised():
    """Make modules on the meta device without drawing their initial values: weights that are about
    to be replaced need none, and a random draw on a meta tensor imports torch's compiler (a second
    or more at every start). The same idea as transformers' `no_init_weights`."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def build_model(model_cls, cfg, state: dict[str, torch.Tensor]) -> nn.Module:
    """Make the model without initialising it, then put the weights in; every tensor checked by name."""
    with uninitialised():
        model = model_cls(cfg)
    assign_checked(model, {k: v.float() for k, v in state.items()}, "weights")
    return model.eval()


def assign_checked(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Put `state` into `model` (made on the meta device) after checking every tensor by name and
    shape; the first missing, unexpected or mis-shaped tensor is an error naming it."""
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise UserError(f"{where}: unexpected tensor {key!r}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(f"{where}: tensor {key!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise UserError(f"{where}: tensor {missing[0]!r} is missing")
    model.load_state_dict(state, assign=True)


def read_shard_index(path: Path) -> dict[str, str]:
    """The weight_map of a `model.safetensors.index.json` (tensor name -> shard file beside it), or
    a one-line error; a shard named by a path rather than a file name is refused."""
    weight_map = read_json(path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{path}: not a shard index (no weight_map from tensor names to shard files)")
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise UserError(f"{path}: shard {shard!r} is not a file name beside the index")
    return weight_map


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors file, or of every shard a `model.safetensors.index.json`
    names; each tensor converted as it is read, so a bfloat16 checkpoint never sits in memory
    beside its float32 copy."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.name.endswith(".index.json"):
        files = [path.parent / s for s in sorted(set(read_shard_index(path).values()))]
    else:
        files = [path]
    tensors = {}
    for file in files:
        if not file.is_file():
            raise UserError(f"{file}: not found")
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name).float()
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{file}: not a readable safetensors file, corrupt or unreadable "
                            f"({str(e).splitlines()[0][:100]})") from None
    return tensors
