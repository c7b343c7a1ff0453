"""Map GPT-2 weights from Hugging Face's and OpenAI's layouts onto our `GPTModel`.

Hugging Face stores GPT-2 with Conv1D layers, whose weights are the transpose of `nn.Linear`'s,
and fuses the query, key and value projections into one `c_attn`. OpenAI's TensorFlow checkpoint
uses the same shapes (with a leading 1 on the matrices). Both are spelled out here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..files import read_json
from ..models.gpt2 import GPT2_CONFIGS, GPTConfig

# Buffers that older Hugging Face checkpoints carry; they hold no learned weights.
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def config_from_hf(hf_config: dict) -> GPTConfig:
    """Our config from a Hugging Face GPT-2 `config.json`."""
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        context_length=hf_config.get("n_positions", hf_config.get("n_ctx", 1024)),
        emb_dim=hf_config["n_embd"],
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
    )


def infer_config(tensors: dict[str, torch.Tensor]) -> GPTConfig:
    """A config from tensor shapes alone; heads from the named size of that width, else 64 per head."""
    vocab_size, emb_dim = tensors["wte.weight"].shape
    n_layers = len({k.split(".")[1] for k in tensors if k.startswith("h.")})
    n_heads = next((c["n_heads"] for c in GPT2_CONFIGS.values() if c["emb_dim"] == emb_dim), emb_dim // 64)
    return GPTConfig(
        vocab_size=vocab_size,
        context_length=tensors["wpe.weight"].shape[0],
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
    )


def strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `transformer.` prefix that `GPT2LMHeadModel.save_pretrained` writes."""
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}


def read_hf_config(directory: Path) -> GPTConfig | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        return config_from_hf(read_json(path))
    except KeyError as e:
        raise UserError(f"{path}: not a GPT-2 config.json ({e})") from None


def state_dict_from_hf(tensors: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from Hugging Face GPT-2 tensor names (without the `transformer.` prefix)."""
    tensors = dict(tensors)
    lm_head = tensors.pop("lm_head.weight", None)
    out = {}

    def take(name):
        if name not in tensors:
            raise UserError(f"weights: tensor {name!r} is missing")
        return tensors.pop(name)

    out["tok_emb.weight"] = take("wte.weight")
    out["pos_emb.weight"] = take("wpe.weight")
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        q_w, k_w, v_w = take(h + "attn.c_attn.weight").T.chunk(3, dim=0)  # Conv1D: (in, 3*out)
        q_b, k_b, v_b = take(h + "attn.c_attn.bias").chunk(3)
        out |= {
            b + "att.W_query.weight": q_w, b + "att.W_query.bias": q_b,
            b + "att.W_key.weight": k_w, b + "att.W_key.bias": k_b,
            b + "att.W_value.weight": v_w, b + "att.W_value.bias": v_b,
            b + "att.out_proj.weight": take(h + "attn.c_proj.weight").T,
            b + "att.out_proj.bias": take(h + "attn.c_proj.bias"),
            b + "ff.layers.0.weight": take(h + "mlp.c_fc.weight").T,
            b + "ff.layers.0.bias": take(h + "mlp.c_fc.bias"),
            b + "ff.layers.2.weight": take(h + "mlp.c_proj.weight").T,
            b + "ff.layers.2.bias": take(h + "mlp.c_proj.bias"),
            b + "norm1.scale": take(h + "ln_1.weight"), b + "norm1.shift": take(h + "ln_1.bias"),
            b + "norm2.scale": take(h + "ln_2.weight"), b + "norm2.shift": take(h + "ln_2.bias"),
        }
    out["final_norm.scale"] = take("ln_f.weight")
    out["final_norm.shift"] = take("ln_f.bias")
    # GPT-2 ties the output head to the token embedding.
    out["out_head.weight"] = out["tok_emb.weight"]
    if lm_head is not None and not torch.equal(lm_head, out["tok_emb.weight"]):
        raise UserError("weights: lm_head.weight differs from wte.weight, but GPT-2 ties them")
    leftover = sorted(k for k in tensors if not _IGNORED.match(k))
    if leftover:
        raise UserError(f"weights: unexpected tensor {leftover[0]!r}" + (f" (and {len(leftover) - 1} more)" if len(leftover) > 1 else ""))
    return {k: v.contiguous() for k, v in out.items()}


def hf_tensors_from_openai(params: dict) -> dict[str, torch.Tensor]:
    """Hugging Face tensor names from the numpy dict the book builds from OpenAI's checkpoint
    (`{"wte", "wpe", "blocks": [{"attn": {"c_attn": {"w", "b"}}, ...}], "g", "b"}`)."""

    def t(array):
        return torch.from_numpy(np.ascontiguousarray(np.squeeze(array), dtype=np.float32))

    out = {"wte.weight": t(params["wte"]), "wpe.weight": t(params["wpe"]),
           "ln_f.weight": t(params["g"]), "ln_f.bias": t(params["b"])}
    for i, block in enumerate(params["blocks"]):
        for path in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj", "ln_1", "ln_2"):
            first, *rest = path.split("/")
            node = block[first][rest[0]] if rest else block[first]
            name = f"h.{i}.{path.replace('/', '.')}"
            if path.startswith("ln"):
                out[name + ".weight"], out[name + ".bias"] = t(node["g"]), t(node["b"])
            else:
                out[name + ".weight"], out[name + ".bias"] = t(node["w"]), t(node["b"])
    return out


def openai_params_from_tf_checkpoint(directory: Path) -> tuple[dict, dict]:
    """Read OpenAI's TensorFlow checkpoint into the book's numpy dict; returns (params, hparams)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(
            f"{directory} holds a TensorFlow checkpoint; reading it needs TensorFlow: "
            "pip install 'gptclassify[tf]' (or pass a model.safetensors instead)"
        ) from None
    hparams = json.loads((directory / "hparams.json").read_text())
    ckpt = tf.train.latest_checkpoint(str(directory))
    if ckpt is None:
        raise UserError(f"{directory}: no checkpoint listed in its 'checkpoint' file")
    params: dict = {"blocks": [{} for _ in range(hparams["n_layer"])]}
    for name, _ in tf.train.list_variables(ckpt):
        array = np.squeeze(tf.train.load_variable(ckpt, name))
        parts = name.split("/")[1:]  # drop the leading "model"
        target = params
        if parts[0].startswith("h"):
            target = params["blocks"][int(parts[0][1:])]
        for key in parts[1:-1]:
            target = target.setdefault(key, {})
        target[parts[-1]] = array
    return params, hparams


def config_from_openai_hparams(hparams: dict) -> GPTConfig:
    return GPTConfig(vocab_size=hparams["n_vocab"], context_length=hparams["n_ctx"],
                     emb_dim=hparams["n_embd"], n_heads=hparams["n_head"], n_layers=hparams["n_layer"])
