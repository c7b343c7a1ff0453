"""Small real inputs for the training tests: a slice of the SMS data and a small random GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import SMS_FILE
from gptclassify.cli import main


def sms_slice_dir(tmp_path: Path, n_ham=90, n_spam=60, name="data") -> Path:
    """`prepare csv` on the first messages of each class of the real file."""
    rows, counts = [], {"ham": 0, "spam": 0}
    with open(SMS_FILE, encoding="utf-8") as f:
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            if counts[label] < {"ham": n_ham, "spam": n_spam}[label]:
                counts[label] += 1
                rows.append({"text": text, "label": label})
    src = tmp_path / f"{name}.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / name
    assert main(["prepare", "csv", str(src), "--out", str(out)]) == 0
    return out


def small_gpt2_dir(tmp_path: Path, n_layer=2, n_embd=64, n_head=4, seed=0) -> Path:
    """A small GPT-2 with random weights in the Hugging Face layout (config.json + safetensors)."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    out = tmp_path / f"gpt2-{n_layer}x{n_embd}"
    model.save_pretrained(out)
    return out
