"""What the user names, resolved once: a short name, a hub id, a directory or a file -> a `Source`
that says where the weights are, which family they are, and where their tokenizer comes from.

`load_pretrained` and `load_tokenizer` (weights/__init__.py) both read a `Source`, so a model and
its tokenizer can never be chosen by two different rules (a Llama-family checkpoint without its
`tokenizer.json` gets an error, never GPT-2's tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import safetensors_names
from ..models.gpt2 import GPT2_CONFIGS
from .fetch import GGUF_NAMES

# Hub repositories of the named models; `-instruct` names take the instruction-tuned weights.
GPT2_HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_CONFIGS}
LLAMA_HUB_REPOS = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M",
    "smollm2-360m-instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
}

# kind: where the weights are; tokenizer: where the tokenizer comes from.
KINDS = ("gpt2-hub", "llama-hub", "gguf-package", "gguf", "safetensors", "tf-checkpoint")


@dataclass(frozen=True)
class Source:
    name: str  # as the user gave it
    kind: str  # one of KINDS
    family: str  # gpt2 or llama
    path: Path | None = None  # the weights file or checkpoint directory (local kinds)
    repo: str | None = None  # the hub repository (hub kinds)
    short_name: str | None = None  # gpt2, smollm2-135m-instruct, ...: the named model, when there is one

    @property
    def tokenizer_json(self) -> Path | None:
        """The tokenizer.json that goes with local safetensors weights (Llama family)."""
        return self.path.parent / "tokenizer.json" if self.kind == "safetensors" else None


def known_models() -> list[str]:
    return [*GPT2_HUB_REPOS, *LLAMA_HUB_REPOS, *GGUF_NAMES]


def resolve(name_or_path: str | Path) -> Source:
    """The one rule from a name to a `Source`: named models and hub ids first, then local paths."""
    name = str(name_or_path)
    by_repo = {repo.lower(): short for short, repo in {**GPT2_HUB_REPOS, **LLAMA_HUB_REPOS}.items()}
    short = by_repo.get(name.lower(), name)  # a hub id (openai-community/gpt2) is its short name
    if short in GPT2_HUB_REPOS:
        return Source(name, "gpt2-hub", "gpt2", repo=GPT2_HUB_REPOS[short], short_name=short)
    if short in LLAMA_HUB_REPOS:
        return Source(name, "llama-hub", "llama", repo=LLAMA_HUB_REPOS[short], short_name=short)
    if short in GGUF_NAMES:
        return Source(name, "gguf-package", "llama", short_name=short.removesuffix("-gguf"))
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"unknown model {name!r}: not a file or directory, and not one of {', '.join(known_models())}")
    if path.is_dir():
        return resolve_directory(name, path)
    if path.suffix == ".gguf":
        return Source(name, "gguf", "llama", path=path)
    return safetensors_source(name, path)


def resolve_directory(name: str, path: Path) -> Source:
    if (path / "checkpoint").is_file() and (path / "hparams.json").is_file():
        return Source(name, "tf-checkpoint", "gpt2", path=path)
    if (path / "model.safetensors").is_file():
        return safetensors_source(name, path / "model.safetensors")
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return Source(name, "gguf", "llama", path=ggufs[0])
    raise UserError(f"{path}: holds no model.safetensors, .gguf file or TensorFlow checkpoint")


def safetensors_source(name: str, path: Path) -> Source:
    """GPT-2 or Llama family, told by the tensor names in the file's header (nothing else is read)."""
    family = "llama" if "model.embed_tokens.weight" in safetensors_names(path) else "gpt2"
    return Source(name, "safetensors", family, path=path)
