"""A finished run directory: what it holds, how it is written, and how it is loaded back.

RUN/ holds `model.safetensors` (the whole classifier), `config.json` (architecture, labels,
pooling, max_length, tokenizer, every training setting), `metrics.json`, `history.json`,
`loss.png`, `accuracy.png`, and the tokenizer file for non-GPT-2 models. `config.json` is written
last: a directory holding it and `model.safetensors` is a finished run. Loading reads safetensors
and JSON only; nothing from the directory is executed.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from .device import resolve_device
from .errors import UserError
from .failpoints import failpoint
from .config import RunConfig
from .files import MAX_JSON_BYTES, atomic_path, load_safetensors, read_json, save_safetensors, write_json
from .models import model_from_config_dict
from .data.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_json
from .weights.tensors import assign_checked, uninitialised


def write_run(run_dir: Path, model: nn.Module, tokenizer: Tokenizer, config: RunConfig, history: dict,
              metrics: dict) -> None:
    from .plots import plot_history

    run_dir = Path(run_dir)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (run_dir / "config.json").unlink(missing_ok=True)  # not a finished run until all of it is written again
    save_safetensors(state_dict, run_dir / "model.safetensors")
    failpoint("run-write")
    if tokenizer.name != "gpt2":
        with atomic_path(run_dir / "tokenizer.json") as tmp:
            tokenizer.hf.save(str(tmp))
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "metrics.json", metrics)
    plot_history(history, run_dir)
    write_json(run_dir / "config.json", config.to_json())  # last: from here on the directory is a finished run


def read_run_config(run_dir: Path) -> RunConfig:
    """A run's config.json, checked (`RunConfig.from_json`): a run directory from someone else is data,
    not code, and nothing in it may point outside it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir}: not a gptclassify run (needs config.json and model.safetensors)")
    return RunConfig.from_json(read_json(run_dir / "config.json", max_bytes=MAX_JSON_BYTES), f"{run_dir}/config.json")


def load_run(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer, RunConfig]:
    """The classifier, its tokenizer and its config, from safetensors and JSON only."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    state = load_safetensors(run_dir / "model.safetensors")
    with uninitialised():
        try:
            model = model_from_config_dict(config.model)
        except (TypeError, ValueError) as e:
            raise UserError(f"{run_dir}/config.json: 'model' does not describe a model ({str(e)[:120]})") from None
        # GPT-2's head has a bias, the Llama family's none since 0.1 (runs before have one)
        model.out_head = nn.Linear(model.cfg.emb_dim, len(config.labels), bias="out_head.bias" in state)
    assign_checked(model, state, f"{run_dir}/model.safetensors")
    if config.tokenizer["kind"] == "tiktoken":
        tokenizer = get_tokenizer(config.tokenizer["name"])
    else:
        tokenizer = tokenizer_from_json(run_dir / config.tokenizer["file"], pad_id=config.policy.pad_id)
    return model.eval().to(resolve_device(device)), tokenizer, config
