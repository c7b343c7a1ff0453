"""What the user names, resolved once: a short name, a hub id, a directory or a file -> a `Source`
that says where the weights are and where their tokenizer comes from.

`load_pretrained` and `load_tokenizer` (weights/__init__.py) both read a `Source`, so a model and
its tokenizer can never be chosen by two different rules (a Llama-style checkpoint without its
`tokenizer.json` gets an error, never GPT-2's tokenizer). The architecture is the checkpoint's own
(`config.json`'s model_type, GGUF's general.architecture), read when the weights are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import read_json, safetensors_names
from ..models.gpt2 import GPT2_CONFIGS
from .fetch import PACKAGED_GGUF
from .tensors import read_shard_index


@dataclass(frozen=True)
class HubModel:
    repo: str
    params: str  # the size its model card states
    note: str = ""


# Short names -> hub repositories. GPT-2 and SmolLM2 are the proven ones; the rest are common
# starting points of each family (`gptclassify models` lists them). Any other hub id works too.
HUB_MODELS = {
    **{name: HubModel(f"openai-community/{name}", p) for name, p in
       zip(GPT2_CONFIGS, ("124M", "355M", "774M", "1.5B"))},
    "smollm2-135m": HubModel("HuggingFaceTB/SmolLM2-135M", "135M"),
    "smollm2-135m-instruct": HubModel("HuggingFaceTB/SmolLM2-135M-Instruct", "135M"),
    "smollm2-360m": HubModel("HuggingFaceTB/SmolLM2-360M", "362M"),
    "smollm2-360m-instruct": HubModel("HuggingFaceTB/SmolLM2-360M-Instruct", "362M"),
    "qwen2.5-0.5b": HubModel("Qwen/Qwen2.5-0.5B", "494M"),
    "qwen2.5-1.5b": HubModel("Qwen/Qwen2.5-1.5B", "1.5B"),
    "qwen3-0.6b": HubModel("Qwen/Qwen3-0.6B-Base", "596M"),
    "llama-3.2-1b": HubModel("meta-llama/Llama-3.2-1B", "1.2B", "gated: accept Meta's licence on the hub, set HF_TOKEN"),
    "gemma-3-270m": HubModel("google/gemma-3-270m", "268M", "gated: accept the Gemma Terms of Use, set HF_TOKEN"),
    "gemma-3-1b": HubModel("google/gemma-3-1b-pt", "1.0B", "gated: accept the Gemma Terms of Use, set HF_TOKEN"),
    "gemma-2-2b": HubModel("google/gemma-2-2b", "2.6B", "gated: accept the Gemma Terms of Use, set HF_TOKEN"),
    "phi-3-mini": HubModel("microsoft/Phi-3-mini-4k-instruct", "3.8B"),
    "mistral-7b": HubModel("mistralai/Mistral-7B-v0.1", "7.2B"),
}
GPT2_HUB_REPOS = {name: HUB_MODELS[name].repo for name in GPT2_CONFIGS}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# kind: where the weights are.
KINDS = ("hub", "gguf-package", "gguf", "safetensors", "tf-checkpoint")


@dataclass(frozen=True)
class Source:
    name: str  # as the user gave it
    kind: str  # one of KINDS
    path: Path | None = None  # the weights file (model.safetensors, its shard index, a .gguf) or TF checkpoint directory
    repo: str | None = None  # the hub repository (hub kind)
    short_name: str | None = None  # gpt2, smollm2-135m-instruct, ...: the named model, when there is one

    @property
    def directory(self) -> Path | None:
        """Where config.json and tokenizer.json sit beside local weights."""
        return None if self.path is None else self.path if self.path.is_dir() else self.path.parent


def known_models() -> list[str]:
    return [*HUB_MODELS, *PACKAGED_GGUF]


def resolve(name_or_path: str | Path) -> Source:
    """The one rule from a name to a `Source`: named models first, then local paths, then hub ids."""
    name = str(name_or_path)
    by_repo = {m.repo.lower(): short for short, m in HUB_MODELS.items()}
    short = by_repo.get(name.lower(), name)  # a hub id (openai-community/gpt2) is its short name
    if short in HUB_MODELS:
        return Source(name, "hub", repo=HUB_MODELS[short].repo, short_name=short)
    if short in PACKAGED_GGUF:
        return Source(name, "gguf-package", short_name=short.removesuffix("-gguf"))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            return resolve_directory(name, path)
        if path.suffix == ".gguf":
            return Source(name, "gguf", path=path)
        return Source(name, "safetensors", path=path)
    if HUB_ID.match(name) and not name.startswith((".", "/")):
        return Source(name, "hub", repo=name)
    raise UserError(f"unknown model {name!r}: not a file or directory, not a hub id (owner/name), and not one of "
                    f"{', '.join(known_models())} (gptclassify models lists them)")


def resolve_directory(name: str, path: Path) -> Source:
    if (path / "checkpoint").is_file() and (path / "hparams.json").is_file():
        return Source(name, "tf-checkpoint", path=path)
    for weights in ("model.safetensors", "model.safetensors.index.json"):
        if (path / weights).is_file():
            return Source(name, "safetensors", path=path / weights)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source(name, "gguf", path=ggufs[0])
    if ggufs:
        raise UserError(f"{path}: holds {len(ggufs)} .gguf files; name the one to load")
    raise UserError(f"{path}: holds no model.safetensors, model.safetensors.index.json, .gguf file or "
                    "TensorFlow checkpoint")


def first_shard_names(path: Path) -> list[str]:
    """Tensor names in a safetensors file's header, or in the first shard an index names."""
    if path.name.endswith(".index.json"):
        return list(read_shard_index(path))
    return safetensors_names(path)


def architecture(source: Source, *, cache_dir=None, endpoint=None) -> str:
    """"gpt2", or the model_type of a Llama-style checkpoint, read from the checkpoint itself:
    config.json's model_type (downloaded first for a hub id), GGUF's general.architecture, or
    for a bare safetensors file the names of its tensors."""
    if source.kind == "tf-checkpoint" or source.short_name in GPT2_CONFIGS:
        return "gpt2"
    if source.kind in ("gguf", "gguf-package"):
        return "gguf"
    if source.kind == "hub":
        from ..hub import hub_file

        config = hub_file(source.repo, "config.json", cache_dir=cache_dir, endpoint=endpoint)
    else:
        config = source.directory / "config.json"
    if config.is_file():
        return str(read_json(config).get("model_type", "gpt2"))
    return "llama" if "model.embed_tokens.weight" in first_shard_names(source.path) else "gpt2"
