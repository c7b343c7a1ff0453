"""`export --format onnx`: `model.onnx` (token ids and an attention mask in, the head's logits out;
batch and length dynamic), the tokenizer as `tokenizer.json` and the run's own `config.json`, so
that `predict`/`serve --backend onnxruntime` run it with onnxruntime, tokenizers and numpy alone.

The graph is the run's network in float32 with its pooling inside (each row's last real token is
read from the mask); truncation, windows, calibration and labels stay in config.json, applied by
the backend as gptclassify applies them (inference/onnx_runtime.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from ..classifier.head import classify_logits
from ..config import TOKENIZERS, RunConfig
from ..data.tokenizer import Tokenizer
from ..errors import UserError
from ..files import write_json
from .transformers_dir import hf_tokenizer, precision_note

OPSET = 18
INLINE_LIMIT = 1 << 30  # weights past this go to model.onnx.data (protobuf stops at 2 GB)


class LogitsFromMask(nn.Module):
    """The run's network as ONNX sees it: (input_ids, attention_mask) -> logits, right padding."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, input_ids, attention_mask):
        return classify_logits(self.model, input_ids, attention_mask.sum(-1), self.pooling)


def write_onnx(out: Path, model: nn.Module, tokenizer: Tokenizer, config: RunConfig, log=print) -> list[str]:
    """Write model.onnx, tokenizer.json and config.json into `out`; returns what differs from the run."""
    model = model.float().eval()
    width = min(8, config.policy.max_length)
    ids = torch.full((2, width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, width // 2:] = 0
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=model.cfg.context_length)
    size = sum(p.numel() * 4 for p in model.parameters())
    log(f"exporting the graph ({size / 1e6:,.0f} MB of float32 weights; about a second per 10 MB on a CPU)")
    quiet = logging.getLogger("torch")
    level = quiet.level
    try:
        quiet.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(LogitsFromMask(model, config.policy.pooling), (ids, mask), dynamo=True,
                                        input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                        dynamic_shapes={"input_ids": {0: batch, 1: length},
                                                        "attention_mask": {0: batch, 1: length}},
                                        opset_version=OPSET, optimize=True)
            program.save(str(out / "model.onnx"), external_data=size >= INLINE_LIMIT)
    except ImportError as e:
        raise UserError(f"exporting to ONNX needs onnx and onnxscript ({e.name} is missing): "
                        "pip install 'gptclassify[onnx]'") from None
    finally:
        quiet.setLevel(level)
    hf_tokenizer(tokenizer).save(str(out / "tokenizer.json"))
    onnx_config = replace(config, tokenizer=dict(TOKENIZERS[1]))
    write_json(out / "config.json", {**onnx_config.to_json(), "onnx": {
        "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"], "opset": OPSET, "padding": "right"}})
    return precision_note(config)
