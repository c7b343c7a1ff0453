"""`load_pretrained`: a model name or a local path in, a from-scratch model with its weights out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UserError
from ..hub import hub_file
from ..models.gpt2 import GPT2_CONFIGS, GPTConfig, GPTModel
from . import gpt2 as gpt2_weights
from .tensors import assign_checked, build_model, read_safetensors

__all__ = ["assign_checked", "build_model", "gpt2_from_openai_params", "known_models", "load_pretrained",
           "read_safetensors"]

GPT2_HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_CONFIGS}


def known_models() -> list[str]:
    from ..fetch import GGUF_NAMES
    from ..models.llama import LLAMA_HUB_REPOS

    return [*GPT2_HUB_REPOS, *LLAMA_HUB_REPOS, *GGUF_NAMES]


def load_pretrained(name_or_path: str | Path, *, cache_dir=None, endpoint: str | None = None) -> nn.Module:
    """A model with pretrained weights, from a hub name or a local file or directory.

    Names: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl` (and the Llama-family names in
    `known_models()`). Paths: a `model.safetensors` file or a directory holding one (with its
    `config.json` if there is one), a directory holding OpenAI's TensorFlow checkpoint, or a
    `.gguf` file.
    """
    name = str(name_or_path)
    if name in GPT2_HUB_REPOS:
        repo = GPT2_HUB_REPOS[name]
        weights = hub_file(repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint)
        config = hub_file(repo, "config.json", cache_dir=cache_dir, endpoint=endpoint, required=False)
        cfg = gpt2_weights.read_hf_config(config.parent) if config else GPTConfig(**GPT2_CONFIGS[name])
        return _gpt2_from_tensors(read_safetensors(weights), cfg)
    from ..fetch import GGUF_NAMES, fetch_smollm2_gguf
    from . import llama as llama_weights

    if name in GGUF_NAMES:
        return llama_weights.load_gguf(fetch_smollm2_gguf())
    if name in llama_weights.LLAMA_HUB_REPOS:
        return llama_weights.load_from_hub(name, cache_dir=cache_dir, endpoint=endpoint)

    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"unknown model {name!r}: not a file or directory, and not one of {', '.join(known_models())}")
    if path.is_dir():
        if (path / "checkpoint").is_file() and (path / "hparams.json").is_file():
            params, hparams = gpt2_weights.openai_params_from_tf_checkpoint(path)
            return gpt2_from_openai_params(params, gpt2_weights.config_from_openai_hparams(hparams))
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "model.safetensors").is_file():
            path = path / "model.safetensors"
        elif ggufs:
            path = ggufs[0]
        else:
            raise UserError(f"{path}: holds no model.safetensors, .gguf file or TensorFlow checkpoint")
    if path.suffix == ".gguf":
        return llama_weights.load_gguf(path)
    tensors = read_safetensors(path)
    if "model.embed_tokens.weight" in tensors:
        return llama_weights.load_from_tensors(tensors, path.parent)
    return _gpt2_from_tensors(tensors, gpt2_weights.read_hf_config(path.parent))


def _gpt2_from_tensors(tensors: dict[str, torch.Tensor], cfg: GPTConfig | None) -> GPTModel:
    tensors = gpt2_weights.strip_prefix(tensors)
    if "wte.weight" not in tensors:
        raise UserError("weights: no 'wte.weight' tensor: not GPT-2 weights in the Hugging Face layout")
    cfg = cfg or gpt2_weights.infer_config(tensors)
    return build_model(GPTModel, cfg, gpt2_weights.state_dict_from_hf(tensors, cfg))


def gpt2_from_openai_params(params: dict, cfg: GPTConfig) -> GPTModel:
    """Our GPT-2 from the book's numpy dict of OpenAI's checkpoint (`load_weights_into_gpt`)."""
    tensors = gpt2_weights.hf_tensors_from_openai(params)
    return build_model(GPTModel, cfg, gpt2_weights.state_dict_from_hf(tensors, cfg))
