"""A Llama-architecture decoder (SmolLM2), from scratch, laid out like our GPT-2.

Same outer names as `GPTModel` (tok_emb, trf_blocks, final_norm, out_head, `embed`) so the
classifier, freezing, pooling and training code treat both families alike. Differences from
GPT-2: RMSNorm instead of LayerNorm, rotary position embeddings instead of learned positions,
grouped-query attention (fewer key/value heads than query heads), a SwiGLU feed-forward, and no
biases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    drop_rate: float = 0.0  # Llama trains without dropout; kept so freezing logic can ask
    family: str = "llama"

    def to_dict(self) -> dict:
        return asdict(self)


LLAMA_CONFIGS = {
    "smollm2-135m": dict(emb_dim=576, hidden_dim=1536, n_heads=9, n_kv_heads=3, n_layers=30),
    "smollm2-360m": dict(emb_dim=960, hidden_dim=2560, n_heads=15, n_kv_heads=5, n_layers=32),
}

def llama_config(name: str, **overrides) -> LlamaConfig:
    return LlamaConfig(**{**LLAMA_CONFIGS[name.removesuffix("-instruct")], **overrides})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype) * self.weight


def rope_cos_sin(seq_len: int, head_dim: int, base: float, device, dtype):
    """cos and sin of each position times each rotary frequency, as (seq_len, head_dim)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate each pair (x[i], x[i + head_dim/2]) by its position's angle (Hugging Face's layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def packed_projection(proj: nn.Linear, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`proj(x)` computed only at the rows where `mask` (batch, seq) is true; zeros elsewhere. On a
    GPU, every row: picking the rows out makes the CPU wait for the GPU (the count of true entries
    decides the output's size), which costs more there than projecting the few padded rows; the
    attention mask hides those rows either way."""
    if x.is_cuda:
        return proj(x)
    packed = proj(x[mask])  # in autocast's precision where one is active (bf16 on CUDA)
    return packed.new_zeros(*mask.shape, proj.out_features).masked_scatter(mask[..., None], packed)


class GroupedQueryAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.rope_base = cfg.rope_base
        self.W_query = nn.Linear(cfg.emb_dim, cfg.n_heads * self.head_dim, bias=False)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.emb_dim, bias=False)

    def forward(self, x, positions=None):
        """Causal attention at every position, or only at `positions` (one per row), as in GPT-2."""
        b, t, _ = x.shape
        mask = None if positions is None else torch.arange(t, device=x.device)[None, :] <= positions[:, None]
        # With `positions`, keys and values only where the query may look (no padding).
        k, v = (self.W_key(x), self.W_value(x)) if mask is None else \
            (packed_projection(self.W_key, x, mask), packed_projection(self.W_value, x, mask))
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_cos_sin(t, self.head_dim, self.rope_base, x.device, k.dtype)
        k = apply_rope(k, cos, sin)
        gqa = self.n_kv_heads != self.n_heads
        if positions is None:
            q = self.W_query(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            rows = torch.arange(b, device=x.device)
            q = self.W_query(x[rows, positions][:, None]).view(b, 1, self.n_heads, self.head_dim).transpose(1, 2)
            q = apply_rope(q, cos[positions][:, None, None], sin[positions][:, None, None])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], enable_gqa=gqa)
        return self.out_proj(y.transpose(1, 2).reshape(b, y.shape[2], -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.up = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.down = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.att = GroupedQueryAttention(cfg)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.ff = SwiGLU(cfg)

    def forward(self, x, positions=None):
        h = self.att(self.norm1(x), positions)
        if positions is not None:
            x = x[torch.arange(x.shape[0], device=x.device), positions][:, None]
        x = x + h
        return x + self.ff(self.norm2(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.trf_blocks = nn.Sequential(*[LlamaBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def embed(self, in_idx):
        return self.tok_emb(in_idx)

    def forward(self, in_idx):
        x = self.trf_blocks(self.embed(in_idx))
        return self.out_head(self.final_norm(x))
