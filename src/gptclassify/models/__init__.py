"""Decoder models written from scratch: GPT-2 (`gpt2.py`) and the Llama family (`llama.py`)."""

import torch.nn as nn

from ..errors import UserError
from .gpt2 import GPTConfig, GPTModel
from .llama import LlamaConfig, LlamaModel


def model_from_config_dict(d: dict) -> nn.Module:
    """An uninitialised-weights model of the architecture a run's config.json describes."""
    d = dict(d)
    family = d.get("family", "gpt2")
    if family == "gpt2":
        return GPTModel(GPTConfig(**d))
    if family == "llama":
        return LlamaModel(LlamaConfig(**d))
    raise UserError(f"unknown model family {family!r}")
