"""Llama-style checkpoints in the Hugging Face layout (`config.json` + `model.safetensors` or its
shards) -> our `LlamaModel`: the tensor names of each family mapped onto ours, Phi-3's fused
projections split, every tensor converted to float32 as it is read (never two full copies)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import UserError
from ..files import read_json
from ..hub import hub_file
from ..models.llama import LLAMA_CONFIGS, LlamaConfig, LlamaModel
from .llama_config import config_from_hf
from .tensors import build_model, read_checkpoint, read_shard_index

__all__ = ["config_from_hf", "load_from_directory", "load_from_hub", "read_hf_config", "tie_head"]

# Hugging Face name (after `model.layers.{i}.`) -> ours (after `trf_blocks.{i}.`)
_HF_BLOCK = {
    "input_layernorm.weight": "norm1.weight",
    "self_attn.q_proj.weight": "att.W_query.weight",
    "self_attn.k_proj.weight": "att.W_key.weight",
    "self_attn.v_proj.weight": "att.W_value.weight",
    "self_attn.q_proj.bias": "att.W_query.bias",
    "self_attn.k_proj.bias": "att.W_key.bias",
    "self_attn.v_proj.bias": "att.W_value.bias",
    "self_attn.o_proj.weight": "att.out_proj.weight",
    "self_attn.o_proj.bias": "att.out_proj.bias",
    "self_attn.q_norm.weight": "att.q_norm.weight",
    "self_attn.k_norm.weight": "att.k_norm.weight",
    "post_attention_layernorm.weight": "norm2.weight",
    "mlp.gate_proj.weight": "ff.gate.weight",
    "mlp.up_proj.weight": "ff.up.weight",
    "mlp.down_proj.weight": "ff.down.weight",
}
# Gemma 2/3 normalise before and after each branch: its post_attention_layernorm is an output norm.
_GEMMA_BLOCK = {**_HF_BLOCK, "post_attention_layernorm.weight": "att_out_norm.weight",
                "pre_feedforward_layernorm.weight": "norm2.weight",
                "post_feedforward_layernorm.weight": "ff_out_norm.weight"}
_HF_TOP = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "final_norm.weight",
           "lm_head.weight": "out_head.weight"}


def rename(tensors: dict, top: dict, block_prefix: str, block: dict) -> dict[str, torch.Tensor]:
    pattern = re.compile(rf"^{re.escape(block_prefix)}(\d+)\.(.+)$")
    out = {}
    for name in list(tensors):
        value = tensors.pop(name)  # the caller's dict empties as ours fills: one copy at a time
        if name in top:
            out[top[name]] = value
        elif (m := pattern.match(name)) and m.group(2) in block:
            out[f"trf_blocks.{m.group(1)}.{block[m.group(2)]}"] = value
        elif name.endswith("rotary_emb.inv_freq"):
            continue  # older checkpoints store this derived buffer
        else:
            raise UserError(f"weights: unexpected tensor {name!r}")
    return out


def split_fused(tensors: dict, cfg: LlamaConfig) -> dict:
    """Phi-3's `qkv_proj` and `gate_up_proj` as the separate projections the other families have."""
    q, kv = cfg.n_heads * cfg.head_size, cfg.n_kv_heads * cfg.head_size
    for name in [n for n in tensors if n.endswith(("self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"))]:
        w = tensors.pop(name)
        base = name.rsplit(".", 2)[0]
        if name.endswith("qkv_proj.weight"):
            parts = zip(("q_proj", "k_proj", "v_proj"), w.split([q, kv, kv]))
        else:
            parts = zip(("gate_proj", "up_proj"), w.chunk(2))
        for part, value in parts:
            tensors[f"{base}.{part}.weight"] = value.clone()
    return tensors


def tie_head(state: dict, cfg: LlamaConfig) -> dict:
    if "out_head.weight" not in state:
        if not cfg.tie_embeddings:
            raise UserError("weights: tensor 'lm_head.weight' is missing")
        state["out_head.weight"] = state["tok_emb.weight"]
    return state


def state_from_hf(tensors: dict, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """Our state dict from a Hugging Face one of the family `cfg` describes."""
    if cfg.model_type == "phi3":
        tensors = split_fused(tensors, cfg)
    block = _GEMMA_BLOCK if cfg.sandwich_norms else _HF_BLOCK
    return tie_head(rename(tensors, _HF_TOP, "model.layers.", block), cfg)


def read_hf_config(directory: Path) -> LlamaConfig | None:
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    hf = read_json(path)
    try:
        return config_from_hf(hf)
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: lacks or mistypes {e} for a {hf.get('model_type')} model") from None


def infer_config(tensors: dict) -> LlamaConfig:
    """SmolLM2's sizes from a bare model.safetensors (no config.json beside it)."""
    vocab_size, emb_dim = tensors["model.embed_tokens.weight"].shape
    n_layers = len({k.split(".")[2] for k in tensors if k.startswith("model.layers.")})
    for c in LLAMA_CONFIGS.values():
        if c["emb_dim"] == emb_dim and c["n_layers"] == n_layers:
            return LlamaConfig(vocab_size=vocab_size, **c)
    raise UserError("weights: a Llama-family safetensors file needs its config.json beside it")


def load_from_directory(weights: Path, directory: Path) -> LlamaModel:
    """`weights`: a model.safetensors file or a shard index (model.safetensors.index.json)."""
    tensors = read_checkpoint(weights)
    cfg = read_hf_config(directory) or infer_config(tensors)
    return build_model(LlamaModel, cfg, state_from_hf(tensors, cfg))


def load_from_hub(repo: str, *, cache_dir=None, endpoint=None) -> LlamaModel:
    """The checkpoint of a hub repository: config.json, then model.safetensors or its shards."""
    config = hub_file(repo, "config.json", cache_dir=cache_dir, endpoint=endpoint)
    weights = hub_file(repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint, required=False)
    if weights is None:
        weights = hub_file(repo, "model.safetensors.index.json", cache_dir=cache_dir, endpoint=endpoint)
        for shard in sorted(set(read_shard_index(weights).values())):
            hub_file(repo, shard, cache_dir=cache_dir, endpoint=endpoint)
    return load_from_directory(weights, config.parent)
