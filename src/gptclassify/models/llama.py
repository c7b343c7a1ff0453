"""The Llama-style decoders, from scratch: Llama 2/3, SmolLM2, Mistral, Qwen2/2.5, Qwen3, Gemma 2/3, Phi-3.

Same outer names as `GPTModel` (tok_emb, trf_blocks, final_norm, out_head, `embed`) so the
classifier, freezing, pooling and training code treat every family alike. What they share with
each other and not with GPT-2: RMSNorm instead of LayerNorm, rotary position embeddings instead
of learned positions, grouped-query attention (fewer key/value heads than query heads), a gated
feed-forward, no biases. Where the families differ, `LlamaConfig` names the difference as one
small switch (as litgpt's `Config` does); the defaults are plain Llama:

  qkv_bias       biases on the query, key and value projections (Qwen2)
  out_bias       a bias on the attention's output projection (Llama's rare attention_bias)
  qk_norm        an RMSNorm over each head's queries and keys before the rotation (Qwen3, Gemma 3)
  head_dim       a head width other than emb_dim / n_heads (Qwen3, Gemma)
  rope_scaling   Llama 3's frequency-dependent stretch of the rotary frequencies, or a linear one
  rope_factors   the same stretch given as one divisor per frequency (how llama.cpp stores it)
  rotary_dims    how much of each head is rotated (Phi-3 variants rotate a part)
  layer_types    which layers see only a sliding window of `sliding_window` keys (Mistral, Gemma)
  rope_local_base the rotary base of the sliding layers (Gemma 3)
  norm_offset    RMSNorm scales by (offset + weight) (Gemma: 1)
  embed_scale    embeddings times sqrt(emb_dim) (Gemma)
  activation     the gate's nonlinearity: silu (SwiGLU) or gelu_tanh (GeGLU, Gemma)
  sandwich_norms a norm after attention and after the feed-forward as well as before (Gemma 2/3)
  attn_scale     the attention's 1/sqrt(d) replaced (Gemma's query_pre_attn_scalar)
  attn_softcap, final_softcap  tanh soft-capping of attention scores and of the logits (Gemma 2)

Phi-3's fused qkv and gate/up projections are split into these three and two when its weights load.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class LlamaConfig:
    vocab_size: int = 49152
    context_length: int = 8192
    emb_dim: int = 576
    hidden_dim: int = 1536
    n_heads: int = 9
    n_kv_heads: int = 3
    n_layers: int = 30
    rope_base: float = 100000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    drop_rate: float = 0.0  # these models train without dropout; kept so freezing logic can ask
    family: str = "llama"
    model_type: str = "llama"  # which of MODEL_TYPES the switches below describe
    head_dim: int = 0  # 0: emb_dim // n_heads
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False
    rope_scaling: dict | None = None  # {"rope_type": "llama3" | "linear", "factor": ..., ...}
    rope_factors: list | None = None  # per frequency, its divisor (llama.cpp's rope_freqs of Llama 3.1+ GGUFs)
    rotary_dims: int = 0  # 0: the whole head
    layer_types: list | None = None  # per layer "full" or "sliding"; None: all full
    sliding_window: int = 0
    rope_local_base: float = 0.0  # 0: rope_base
    norm_offset: float = 0.0
    embed_scale: bool = False
    activation: str = "silu"
    sandwich_norms: bool = False
    attn_scale: float = 0.0  # 0: 1 / sqrt(head_dim)
    attn_softcap: float = 0.0  # 0: none
    final_softcap: float = 0.0  # 0: none

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.emb_dim // self.n_heads

    def is_sliding(self, layer: int) -> bool:
        return bool(self.sliding_window) and self.layer_types is not None and self.layer_types[layer] == "sliding"


LLAMA_CONFIGS = {
    "smollm2-135m": dict(emb_dim=576, hidden_dim=1536, n_heads=9, n_kv_heads=3, n_layers=30),
    "smollm2-360m": dict(emb_dim=960, hidden_dim=2560, n_heads=15, n_kv_heads=5, n_layers=32),
}


def llama_config(name: str, **overrides) -> LlamaConfig:
    return LlamaConfig(**{**LLAMA_CONFIGS[name.removesuffix("-instruct")], **overrides})


class RMSNorm(nn.Module):
    """x / rms(x) * (offset + weight). Llama casts back to the input's precision before scaling,
    Gemma (offset 1) after, in float32; both are what their reference code does."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.ones(dim) if offset == 0 else torch.zeros(dim))

    def forward(self, x):
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        if self.offset:
            return (normed * (self.offset + self.weight.float())).to(x.dtype)
        return normed.to(x.dtype) * self.weight


def inverse_frequencies(dims: int, base: float, scaling: dict | None, factors: list | None = None) -> torch.Tensor:
    """The rotary frequencies of `dims` rotated dimensions; Llama 3's stretch (long wavelengths
    divided by `factor`, short ones kept, a smooth blend between), a linear one, or each divided
    by its own factor, if asked."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))
    if factors:
        return inv_freq / torch.tensor(factors, dtype=torch.float32)
    if not scaling:
        return inv_freq
    factor = float(scaling["factor"])
    if scaling["rope_type"] == "linear":
        return inv_freq / factor
    old_context = scaling["original_max_position_embeddings"]
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    wavelen = 2 * math.pi / inv_freq
    stretched = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * stretched / factor + smooth * stretched
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, blended, stretched)


def rope_cos_sin(seq_len: int, inv_freq: torch.Tensor, device, dtype):
    """cos and sin of each position times each rotary frequency, as (seq_len, rotated dims)."""
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq.to(device))
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate each pair (x[i], x[i + d/2]) of the first d = cos.shape[-1] dimensions by its
    position's angle (Hugging Face's layout); the rest of the head passes unrotated."""
    d = cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    x1, x2 = rot.chunk(2, dim=-1)
    rotated = rot * cos + torch.cat([-x2, x1], dim=-1) * sin
    return rotated if rest.shape[-1] == 0 else torch.cat([rotated, rest], dim=-1)


def packed_projection(proj: nn.Linear, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`proj(x)` computed only at the rows where `mask` (batch, seq) is true; zeros elsewhere. On a
    GPU, every row: picking the rows out makes the CPU wait for the GPU (the count of true entries
    decides the output's size), which costs more there than projecting the few padded rows; the
    attention mask hides those rows either way."""
    if x.is_cuda:
        return proj(x)
    packed = proj(x[mask])  # in autocast's precision where one is active (bf16 on CUDA)
    return packed.new_zeros(*mask.shape, proj.out_features).masked_scatter(mask[..., None], packed)


def attend(q, k, v, mask, scale: float | None, softcap: float):
    """softmax(q k^T * scale) v over the keys `mask` allows (None: causal). With `softcap`, the
    scores pass through cap * tanh(score / cap) first (Gemma 2), which SDPA cannot do."""
    gqa = k.shape[1] != q.shape[1]
    if not softcap:
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    if gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    scores = softcap * torch.tanh(scores / softcap)
    if mask is None:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class GroupedQueryAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int = 0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_size
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else 0
        if self.window and cfg.rope_local_base:  # Gemma 3's local layers: their own base, unscaled
            self.rope = (cfg.rotary_dims or self.head_dim, cfg.rope_local_base, None, None)
        else:  # computed per call: a few dozen numbers
            self.rope = (cfg.rotary_dims or self.head_dim, cfg.rope_base, cfg.rope_scaling, cfg.rope_factors)
        self.scale, self.softcap = cfg.attn_scale or None, cfg.attn_softcap
        self.W_query = nn.Linear(cfg.emb_dim, cfg.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.emb_dim, bias=cfg.out_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps, cfg.norm_offset)
            self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps, cfg.norm_offset)
        else:
            self.q_norm = self.k_norm = nn.Identity()

    def key_mask(self, t: int, positions, device):
        """Which keys each query may see: None for plain causal attention over all `t` positions,
        else a boolean mask (t, t), or (batch, 1, 1, t) for one query per row at `positions`."""
        keys = torch.arange(t, device=device)
        if positions is None:
            if not self.window or self.window >= t:
                return None
            queries = keys[:, None]
            return (keys[None, :] <= queries) & (keys[None, :] > queries - self.window)
        mask = keys[None, :] <= positions[:, None]
        if self.window:
            mask &= keys[None, :] > positions[:, None] - self.window
        return mask[:, None, None, :]

    def forward(self, x, positions=None):
        """Causal attention at every position, or only at `positions` (one per row), as in GPT-2."""
        b, t, _ = x.shape
        mask = self.key_mask(t, positions, x.device)
        # With `positions`, keys and values only where some query may look (no padding).
        rows = None if positions is None else torch.arange(t, device=x.device)[None, :] <= positions[:, None]
        k, v = (self.W_key(x), self.W_value(x)) if rows is None else \
            (packed_projection(self.W_key, x, rows), packed_projection(self.W_value, x, rows))
        k = self.k_norm(k.view(b, t, self.n_kv_heads, self.head_dim)).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_cos_sin(t, inverse_frequencies(*self.rope), x.device, k.dtype)
        k = apply_rope(k, cos, sin)
        if positions is None:
            q = self.q_norm(self.W_query(x).view(b, t, self.n_heads, self.head_dim)).transpose(1, 2)
            q = apply_rope(q, cos, sin)
        else:
            last = x[torch.arange(b, device=x.device), positions][:, None]
            q = self.q_norm(self.W_query(last).view(b, 1, self.n_heads, self.head_dim)).transpose(1, 2)
            q = apply_rope(q, cos[positions][:, None, None], sin[positions][:, None, None])
        y = attend(q, k, v, mask, self.scale, self.softcap)
        return self.out_proj(y.transpose(1, 2).reshape(b, y.shape[2], -1))


class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with silu, GeGLU with tanh-GELU."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.act = ACTIVATIONS[cfg.activation]
        self.gate = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.up = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.down = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int = 0):
        super().__init__()
        norm = lambda: RMSNorm(cfg.emb_dim, cfg.norm_eps, cfg.norm_offset)  # noqa: E731
        self.norm1 = norm()
        self.att = GroupedQueryAttention(cfg, layer)
        self.norm2 = norm()
        self.ff = GatedFeedForward(cfg)
        # Gemma 2/3 normalise each branch's output too; elsewhere these pass it through.
        self.att_out_norm = norm() if cfg.sandwich_norms else nn.Identity()
        self.ff_out_norm = norm() if cfg.sandwich_norms else nn.Identity()

    def forward(self, x, positions=None):
        h = self.att_out_norm(self.att(self.norm1(x), positions))
        if positions is not None:
            x = x[torch.arange(x.shape[0], device=x.device), positions][:, None]
        x = x + h
        return x + self.ff_out_norm(self.ff(self.norm2(x)))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.trf_blocks = nn.Sequential(*[LlamaBlock(cfg, i) for i in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps, cfg.norm_offset)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def embed(self, in_idx):
        x = self.tok_emb(in_idx)
        if self.cfg.embed_scale:  # Gemma: the scale rounded to the weights' precision, as its reference does
            x = x * torch.tensor(self.cfg.emb_dim ** 0.5, dtype=x.dtype)
        return x

    def forward(self, in_idx):
        x = self.trf_blocks(self.embed(in_idx))
        logits = self.out_head(self.final_norm(x))
        if self.cfg.final_softcap:
            logits = self.cfg.final_softcap * torch.tanh(logits / self.cfg.final_softcap)
        return logits
