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
from .failpoints import failpoint
from .classifier import POOLINGS
from .files import MAX_JSON_BYTES, atomic_path, load_safetensors, read_json, save_safetensors, write_json
from .models import model_from_config_dict
from .tokenizer import TRUNCATIONS, Tokenizer, get_tokenizer, tokenizer_from_json
from .weights.tensors import assign_checked, uninitialised


def write_run(run_dir: Path, model: nn.Module, tokenizer: Tokenizer, config: dict, history: dict,
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
    write_json(run_dir / "config.json", config)  # last: from here on the directory is a finished run


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, checked: a run directory from someone else is data, not code, and
    nothing in it may point outside it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir}: not a gptclassify run (needs config.json and model.safetensors)")
    where = f"{run_dir}/config.json"
    config = read_json(run_dir / "config.json", max_bytes=MAX_JSON_BYTES)
    for key in ("model", "id2label", "pooling", "max_length", "tokenizer", "pad_id"):
        if key not in config:
            raise UserError(f"{where}: missing {key!r}; not a gptclassify run config")
    config.setdefault("truncation", "head")  # runs written before truncation policies kept the head
    id2label, tok = config["id2label"], config["tokenizer"]
    checks = [
        (isinstance(config["model"], dict), "'model' must be an object"),
        (isinstance(id2label, dict) and len(id2label) >= 2 and sorted(id2label) == sorted(map(str, range(len(id2label))))
         and all(isinstance(v, str) for v in id2label.values()), "'id2label' must map 0..n-1 to label names"),
        (config["pooling"] in POOLINGS, f"'pooling' must be one of {', '.join(POOLINGS)}"),
        (config["truncation"] in TRUNCATIONS, f"'truncation' must be one of {', '.join(TRUNCATIONS)}"),
        (isinstance(config["max_length"], int) and config["max_length"] > 0, "'max_length' must be a positive integer"),
        (isinstance(config["pad_id"], int) and config["pad_id"] >= 0, "'pad_id' must be a token id"),
        (config.get("pad_to") is None or isinstance(config["pad_to"], int) and config["pad_to"] > 0,
         "'pad_to' must be a positive integer or null"),
        (isinstance(tok, dict) and (tok.get("kind") == "tiktoken" and tok.get("name") == "gpt2" or
                                    tok.get("kind") == "tokenizers" and tok.get("file") == "tokenizer.json"),
         "'tokenizer' must be tiktoken gpt2, or tokenizers with the run's own tokenizer.json"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"{where}: {message}")
    return config


def run_labels(config: dict) -> list[str]:
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def load_run(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """The classifier, its tokenizer and its config, from safetensors and JSON only."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    with uninitialised():
        try:
            model = model_from_config_dict(config["model"])
        except (TypeError, ValueError) as e:
            raise UserError(f"{run_dir}/config.json: 'model' does not describe a model ({str(e)[:120]})") from None
        model.out_head = nn.Linear(model.cfg.emb_dim, len(config["id2label"]))
    assign_checked(model, load_safetensors(run_dir / "model.safetensors"), f"{run_dir}/model.safetensors")
    tok = config["tokenizer"]
    if tok["kind"] == "tiktoken":
        tokenizer = get_tokenizer(tok["name"])
    else:
        tokenizer = tokenizer_from_json(run_dir / tok["file"], pad_id=config["pad_id"])
    return model.eval().to(resolve_device(device)), tokenizer, config
