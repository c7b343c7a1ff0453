"""`load_pretrained`: a model name or a local path in, a from-scratch model with its weights out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .errors import UserError
from .hub import hub_file
from .models import gpt2_weights
from .models.gpt2 import GPT2_CONFIGS, GPTConfig, GPTModel

GPT2_HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_CONFIGS}


def known_models() -> list[str]:
    from .fetch import GGUF_NAMES
    from .models.llama import LLAMA_HUB_REPOS

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
    from .fetch import GGUF_NAMES, fetch_smollm2_gguf
    from .models import llama_weights

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


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


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


def model_from_config_dict(d: dict) -> nn.Module:
    """An uninitialised-weights model of the architecture a run's config.json describes."""
    d = dict(d)
    family = d.get("family", "gpt2")
    if family == "gpt2":
        return GPTModel(GPTConfig(**d))
    if family == "llama":
        from .models.llama import LlamaConfig, LlamaModel

        return LlamaModel(LlamaConfig(**d))
    raise UserError(f"unknown model family {family!r}")
