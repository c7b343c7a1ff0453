"""A finished run directory: what it holds, how it is written, and how it is loaded back.

RUN/ holds `model.safetensors` (the whole classifier), `config.json` (architecture, labels,
pooling, max_length, tokenizer, every training setting), `metrics.json`, `history.json`,
`loss.png`, `accuracy.png`, and the tokenizer file for non-GPT-2 models. `config.json` is written
last: a directory holding it and `model.safetensors` is a finished run. Loading reads safetensors
and JSON only; nothing from the directory is executed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .device import resolve_device
from .errors import UserError
from .files import atomic_path, load_safetensors, read_json, save_safetensors, write_json
from .models import model_from_config_dict
from .tokenizer import Tokenizer, get_tokenizer, tokenizer_from_json
from .weights.tensors import assign_checked


def write_run(run_dir: Path, model: nn.Module, tokenizer: Tokenizer, config: dict, history: dict,
              metrics: dict) -> None:
    from .plots import plot_history

    run_dir = Path(run_dir)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state_dict, run_dir / "model.safetensors")
    if tokenizer.name != "gpt2":
        with atomic_path(run_dir / "tokenizer.json") as tmp:
            tokenizer.hf.save(str(tmp))
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "metrics.json", metrics)
    plot_history(history, run_dir)
    write_json(run_dir / "config.json", config)  # last: from here on the directory is a finished run


def read_run_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir}: not a gptclassify run (needs config.json and model.safetensors)")
    config = read_json(run_dir / "config.json")
    for key in ("model", "id2label", "pooling", "max_length", "tokenizer", "pad_id"):
        if key not in config:
            raise UserError(f"{run_dir}/config.json: missing {key!r}; not a gptclassify run config")
    return config


def run_labels(config: dict) -> list[str]:
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def load_run(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """The classifier, its tokenizer and its config, from safetensors and JSON only."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    with torch.device("meta"):
        model = model_from_config_dict(config["model"])
        model.out_head = nn.Linear(model.cfg.emb_dim, len(config["id2label"]))
    assign_checked(model, load_safetensors(run_dir / "model.safetensors"), f"{run_dir}/model.safetensors")
    tok = config["tokenizer"]
    if tok["kind"] == "tiktoken":
        tokenizer = get_tokenizer(tok["name"])
    else:
        tokenizer = tokenizer_from_json(run_dir / tok["file"], pad_id=config["pad_id"])
    return model.eval().to(resolve_device(device)), tokenizer, config
