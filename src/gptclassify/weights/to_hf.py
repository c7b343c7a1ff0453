"""Our models in Hugging Face's layout: the inverse of gpt2.py and llama.py (tensor names, GPT-2's
Conv1D transposes and fused c_attn, Phi-3's fused projections) and of llama_config.py (our
`LlamaConfig` as the `config.json` of its transformers class). tests/test_export.py round-trips
every family through transformers."""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.gpt2 import GPTConfig
from ..models.llama import LlamaConfig
from .llama import _GEMMA_BLOCK, _HF_BLOCK

# Our model_type -> transformers' (config.json's model_type, the sequence-classification class)
HF_CLASSES = {
    "gpt2": ("gpt2", "GPT2ForSequenceClassification"),
    "llama": ("llama", "LlamaForSequenceClassification"),
    "mistral": ("mistral", "MistralForSequenceClassification"),
    "qwen2": ("qwen2", "Qwen2ForSequenceClassification"),
    "qwen3": ("qwen3", "Qwen3ForSequenceClassification"),
    "gemma2": ("gemma2", "Gemma2ForSequenceClassification"),
    "gemma3": ("gemma3_text", "Gemma3TextForSequenceClassification"),
    "phi3": ("phi3", "Phi3ForSequenceClassification"),
}


def gpt2_state_to_hf(state: dict, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT2Model's tensors (prefix `transformer.`) from ours; the head is the caller's."""
    out = {"transformer.wte.weight": state["tok_emb.weight"], "transformer.wpe.weight": state["pos_emb.weight"],
           "transformer.ln_f.weight": state["final_norm.scale"], "transformer.ln_f.bias": state["final_norm.shift"]}
    for i in range(cfg.n_layers):
        b, h = f"trf_blocks.{i}.", f"transformer.h.{i}."
        out |= {
            h + "attn.c_attn.weight": torch.cat([state[b + f"att.W_{p}.weight"] for p in ("query", "key", "value")]).T,
            h + "attn.c_attn.bias": torch.cat([state[b + f"att.W_{p}.bias"] for p in ("query", "key", "value")]),
            h + "attn.c_proj.weight": state[b + "att.out_proj.weight"].T, h + "attn.c_proj.bias": state[b + "att.out_proj.bias"],
            h + "mlp.c_fc.weight": state[b + "ff.layers.0.weight"].T, h + "mlp.c_fc.bias": state[b + "ff.layers.0.bias"],
            h + "mlp.c_proj.weight": state[b + "ff.layers.2.weight"].T, h + "mlp.c_proj.bias": state[b + "ff.layers.2.bias"],
            h + "ln_1.weight": state[b + "norm1.scale"], h + "ln_1.bias": state[b + "norm1.shift"],
            h + "ln_2.weight": state[b + "norm2.scale"], h + "ln_2.bias": state[b + "norm2.shift"],
        }
    return {k: v.contiguous() for k, v in out.items()}


def gpt2_config_to_hf(cfg: GPTConfig) -> dict:
    return {"model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length,
            "n_embd": cfg.emb_dim, "n_head": cfg.n_heads, "n_layer": cfg.n_layers,
            "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def llama_state_to_hf(state: dict, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """The decoder's tensors (prefix `model.`) from ours; Phi-3's projections fused again."""
    ours_to_hf = {v: k for k, v in (_GEMMA_BLOCK if cfg.sandwich_norms else _HF_BLOCK).items()}
    out = {"model.embed_tokens.weight": state["tok_emb.weight"], "model.norm.weight": state["final_norm.weight"]}
    for name, value in state.items():
        if not name.startswith("trf_blocks."):
            continue
        _, i, rest = name.split(".", 2)
        out[f"model.layers.{i}.{ours_to_hf[rest]}"] = value
    if cfg.model_type == "phi3":
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            out[p + "self_attn.qkv_proj.weight"] = torch.cat([out.pop(p + f"self_attn.{x}_proj.weight") for x in "qkv"])
            out[p + "mlp.gate_up_proj.weight"] = torch.cat([out.pop(p + f"mlp.{x}_proj.weight") for x in ("gate", "up")])
    return {k: v.contiguous() for k, v in out.items()}


def llama_config_to_hf(cfg: LlamaConfig) -> dict:
    """`config.json` of the family's transformers class; what it cannot say is refused in one line."""
    kind = cfg.model_type
    if cfg.rope_factors:
        raise UserError(f"{kind}: the rotary divisors this model's GGUF carries (rope_freqs) have no config.json "
                        "setting in transformers; export a model loaded from a Hugging Face checkpoint instead")
    types = ["sliding_attention" if cfg.is_sliding(i) else "full_attention" for i in range(cfg.n_layers)]
    hf = {"model_type": HF_CLASSES[kind][0], "vocab_size": cfg.vocab_size, "hidden_size": cfg.emb_dim,
          "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
          "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_size,
          "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
          "tie_word_embeddings": cfg.tie_embeddings, "rope_theta": cfg.rope_base,
          "attention_dropout": 0.0}
    if cfg.rope_scaling:
        hf["rope_scaling"] = dict(cfg.rope_scaling)
    if kind in ("llama", "mistral", "phi3"):
        hf["hidden_act"] = cfg.activation if cfg.activation == "silu" else "gelu_pytorch_tanh"
    if kind in ("llama",):
        hf["attention_bias"], hf["mlp_bias"] = cfg.qkv_bias or cfg.out_bias, False
        if cfg.qkv_bias != cfg.out_bias:
            raise UserError("llama: transformers' attention_bias puts biases on all four projections or none")
    if kind == "mistral":
        hf["sliding_window"] = cfg.sliding_window or None
    if kind == "phi3":
        hf["sliding_window"] = cfg.sliding_window or None
        hf["partial_rotary_factor"] = (cfg.rotary_dims or cfg.head_size) / cfg.head_size
    if kind in ("qwen2", "qwen3"):
        sliding = "sliding_attention" in types
        hf |= {"use_sliding_window": sliding, "sliding_window": cfg.sliding_window or None,
               "max_window_layers": types.index("sliding_attention") if sliding else cfg.n_layers,
               "layer_types": types, "hidden_act": "silu"}
        if kind == "qwen3":
            hf["attention_bias"] = cfg.qkv_bias
    if kind.startswith("gemma"):
        scalar = (cfg.attn_scale or cfg.head_size ** -0.5) ** -2
        hf |= {"hidden_activation": "gelu_pytorch_tanh",
               "query_pre_attn_scalar": round(scalar) if abs(scalar - round(scalar)) < 1e-3 else scalar,
               "sliding_window": cfg.sliding_window or None, "layer_types": types,
               "attn_logit_softcapping": cfg.attn_softcap or None, "final_logit_softcapping": cfg.final_softcap or None}
        if kind == "gemma3":
            hf["rope_local_base_freq"] = cfg.rope_local_base or cfg.rope_base
    return hf
