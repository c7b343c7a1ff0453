"""A Hugging Face `config.json` of a Llama-style decoder -> our `LlamaConfig`, or a one-line refusal.

`save_pretrained` leaves out the values equal to its class's defaults, so each family's defaults
are written here (tests/test_families.py checks them against transformers' config classes). Both
ways transformers has spelled the rotary settings are read: `rope_theta` + `rope_scaling` (+ Gemma 3's
`rope_local_base_freq`), and v5's `rope_parameters` (one dict, or one per layer type).
"""

from __future__ import annotations

from ..errors import UserError
from ..models.llama import MODEL_TYPES, LlamaConfig

_COMMON = dict(rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=2048,
               attention_bias=False, hidden_act="silu", sliding_window=None, head_dim=None)
HF_DEFAULTS = {
    "llama": _COMMON,
    "mistral": {**_COMMON, "max_position_embeddings": 4096 * 32, "sliding_window": 4096},
    "qwen2": {**_COMMON, "max_position_embeddings": 32768, "use_sliding_window": False,
              "max_window_layers": 28},
    "qwen3": {**_COMMON, "max_position_embeddings": 32768, "use_sliding_window": False,
              "max_window_layers": 28, "head_dim": 128},
    "gemma2": {**_COMMON, "max_position_embeddings": 8192, "tie_word_embeddings": True, "head_dim": 256,
               "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "gemma3": {**_COMMON, "max_position_embeddings": 131072, "tie_word_embeddings": True, "head_dim": 256,
               "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "rope_theta": 1_000_000.0, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
               "final_logit_softcapping": None, "attn_logit_softcapping": None},
    "phi3": {**_COMMON, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "partial_rotary_factor": 1.0},
}
ALIASES = {"gemma3_text": "gemma3"}
ROPE_TYPES = ("default", "llama3", "linear")


def supported() -> str:
    return ", ".join(("gpt2", *MODEL_TYPES))


def model_type_of(hf: dict) -> str:
    """Our name for the checkpoint's architecture, or a one-line refusal naming it and ours."""
    raw = hf.get("model_type")
    if raw is None:
        raise UserError("config.json has no model_type: cannot tell which architecture it is")
    if raw == "gemma3" and "text_config" in hf:
        raise UserError("gemma3 with a vision tower (config.json has text_config) is not supported; use a "
                        "text-only Gemma 3 checkpoint (model_type gemma3_text, e.g. google/gemma-3-270m or -1b)")
    kind = ALIASES.get(raw, raw)
    if kind not in MODEL_TYPES:
        raise UserError(f"architecture {raw!r} is not supported (ours: {supported()})")
    return kind


def config_from_hf(hf: dict) -> LlamaConfig:
    kind = model_type_of(hf)
    g = {**HF_DEFAULTS[kind], **hf}
    if g.get("mlp_bias"):
        raise UserError(f"{kind}: biases in the feed-forward (mlp_bias) are not supported")
    n_heads = g["num_attention_heads"]
    head_dim = g.get("head_dim") or g["hidden_size"] // n_heads
    full, local = rope_settings(g)
    act = g.get("hidden_activation") if kind.startswith("gemma") else g.get("hidden_act", "silu")
    if act not in ("silu", "gelu_pytorch_tanh"):
        raise UserError(f"{kind}: activation {act!r} is not supported (silu, gelu_pytorch_tanh)")
    window = g.get("sliding_window") or 0
    return LlamaConfig(
        vocab_size=g["vocab_size"], context_length=g["max_position_embeddings"], emb_dim=g["hidden_size"],
        hidden_dim=g["intermediate_size"], n_heads=n_heads, n_kv_heads=g.get("num_key_value_heads") or n_heads,
        n_layers=g["num_hidden_layers"], rope_base=float(full["rope_theta"]), norm_eps=float(g["rms_norm_eps"]),
        tie_embeddings=bool(g["tie_word_embeddings"]), model_type=kind,
        head_dim=head_dim if head_dim * n_heads != g["hidden_size"] else 0,
        qkv_bias=kind == "qwen2" or bool(g["attention_bias"]), out_bias=kind != "qwen2" and bool(g["attention_bias"]),
        qk_norm=kind in ("qwen3", "gemma3"),
        rope_scaling=scaling_of(full), rotary_dims=rotary_dims(g, head_dim),
        layer_types=layer_types(kind, g, window), sliding_window=window if layer_types(kind, g, window) else 0,
        rope_local_base=float(local["rope_theta"]) if local else 0.0,
        norm_offset=1.0 if kind.startswith("gemma") else 0.0, embed_scale=kind.startswith("gemma"),
        activation="gelu_tanh" if act == "gelu_pytorch_tanh" else "silu", sandwich_norms=kind.startswith("gemma"),
        attn_scale=float(g["query_pre_attn_scalar"]) ** -0.5 if kind.startswith("gemma") else 0.0,
        attn_softcap=float(g.get("attn_logit_softcapping") or 0.0), final_softcap=float(g.get("final_logit_softcapping") or 0.0),
    )


def rope_settings(g: dict) -> tuple[dict, dict | None]:
    """The rotary settings of the full-attention layers and, where they differ (Gemma 3), of the
    sliding ones: each a dict with rope_theta and, if the base is stretched, rope_type and its factors."""
    params = g.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:  # v5 Gemma 3: one dict per layer type
        full, local = dict(params["full_attention"]), dict(params.get("sliding_attention") or {})
        full.setdefault("rope_theta", g["rope_theta"])
        local.setdefault("rope_theta", g.get("rope_local_base_freq", full["rope_theta"]))
        return full, local
    if isinstance(params, dict):
        full = {"rope_theta": g["rope_theta"], **params}
    else:
        full = {"rope_theta": g["rope_theta"], **(g.get("rope_scaling") or {})}
    local = {"rope_theta": g["rope_local_base_freq"]} if "rope_local_base_freq" in g else None
    return full, local


def scaling_of(rope: dict) -> dict | None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise UserError(f"rope scaling {kind!r} is not supported (ours: {', '.join(ROPE_TYPES)})")
    if kind == "default":
        return None
    keys = ("factor",) if kind == "linear" else ("factor", "low_freq_factor", "high_freq_factor",
                                                 "original_max_position_embeddings")
    missing = [k for k in keys if k not in rope]
    if missing:
        raise UserError(f"rope scaling {kind!r} needs {', '.join(missing)} in config.json")
    return {"rope_type": kind, **{k: rope[k] for k in keys}}


def rotary_dims(g: dict, head_dim: int) -> int:
    dims = int(head_dim * float(g.get("partial_rotary_factor", 1.0)))
    return 0 if dims == head_dim else dims


def layer_types(kind: str, g: dict, window: int) -> list[str] | None:
    """Per layer, "full" or "sliding" (a window of `window` keys); None when every layer sees all keys."""
    n = g["num_hidden_layers"]
    if g.get("layer_types"):
        names = {"full_attention": "full", "sliding_attention": "sliding"}
        unknown = sorted({t for t in g["layer_types"] if t not in names})
        if unknown:
            raise UserError(f"{kind}: layer type {unknown[0]!r} is not supported (full_attention, sliding_attention)")
        types = [names[t] for t in g["layer_types"]]
    elif kind in ("mistral", "phi3"):
        types = ["sliding"] * n
    elif kind in ("qwen2", "qwen3"):
        types = ["sliding" if g.get("use_sliding_window") and i >= g["max_window_layers"] else "full" for i in range(n)]
    elif kind == "gemma2":
        types = ["sliding" if i % 2 == 0 else "full" for i in range(n)]
    elif kind == "gemma3":
        types = ["sliding" if (i + 1) % g["sliding_window_pattern"] else "full" for i in range(n)]
    else:
        types = ["full"] * n
    if kind in ("qwen2", "qwen3") and not g.get("use_sliding_window"):
        types = ["full"] * n  # Qwen keeps a window in config.json that it does not use
    return types if window and "sliding" in types else None
