"""Decoder models written from scratch: GPT-2 (`gpt2.py`) and the Llama-style families (`llama.py`)."""

import torch.nn as nn

from ..errors import UserError
from .gpt2 import GPTConfig, GPTModel
from .llama import LlamaConfig, LlamaModel


def check_sizes(d: dict) -> None:
    """A ValueError naming the first size that no model can have (a hand-edited or foreign config)."""
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "hidden_dim", "n_kv_heads"):
        if key in d and (not isinstance(d[key], int) or isinstance(d[key], bool) or d[key] < 1):
            raise ValueError(f"{key} must be a positive whole number, not {d[key]!r}")
    if d.get("emb_dim", 1) % d.get("n_heads", 1) and not d.get("head_dim"):
        raise ValueError(f"emb_dim {d['emb_dim']} is not a multiple of n_heads {d['n_heads']}")
    if d.get("n_heads", 1) % d.get("n_kv_heads", 1):
        raise ValueError(f"n_heads {d['n_heads']} is not a multiple of n_kv_heads {d['n_kv_heads']}")


def model_from_config_dict(d: dict) -> nn.Module:
    """An uninitialised-weights model of the architecture a run's config.json describes."""
    d = dict(d)
    check_sizes(d)
    family = d.get("family", "gpt2")
    if family == "gpt2":
        return GPTModel(GPTConfig(**d))
    if family == "llama":
        return LlamaModel(LlamaConfig(**d))
    raise UserError(f"unknown model family {family!r}")
