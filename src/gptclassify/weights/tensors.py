"""Putting a state dict into a model: read a safetensors file, make the model without
initialising it, and assign every tensor after checking it by name and shape."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError
from ..files import load_safetensors as read_safetensors

__all__ = ["assign_checked", "build_model", "read_safetensors"]


def build_model(model_cls, cfg, state: dict[str, torch.Tensor]) -> nn.Module:
    """Make the model without initialising it, then put the weights in; every tensor checked by name."""
    with torch.device("meta"):
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
