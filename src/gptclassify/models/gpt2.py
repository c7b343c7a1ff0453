"""GPT-2, written from scratch with the module names of "Build a Large Language Model (From Scratch)".

The structure and attribute names follow the book's `GPTModel` (tok_emb, pos_emb, drop_emb,
trf_blocks, final_norm, out_head) so that `model.trf_blocks[-1]`, `model.final_norm` and
`model.out_head` work as in chapter 6. Attention goes through `scaled_dot_product_attention`,
which picks a fused kernel on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    norm_eps: float = 1e-5
    family: str = "gpt2"

    def to_dict(self) -> dict:
        return asdict(self)


GPT2_CONFIGS = {
    "gpt2": dict(emb_dim=768, n_heads=12, n_layers=12),  # 124M
    "gpt2-medium": dict(emb_dim=1024, n_heads=16, n_layers=24),  # 355M
    "gpt2-large": dict(emb_dim=1280, n_heads=20, n_layers=36),  # 774M
    "gpt2-xl": dict(emb_dim=1600, n_heads=25, n_layers=48),  # 1558M
}


def gpt2_config(name: str, **overrides) -> GPTConfig:
    """The named GPT-2 size (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`), with overrides."""
    return GPTConfig(**{**GPT2_CONFIGS[name], **overrides})


class LayerNorm(nn.Module):
    """The book's LayerNorm (parameters `scale` and `shift`), computed by the fused kernel."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GPT-2's GELU: the tanh approximation (Hugging Face calls it `gelu_new`)."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x):
        return self.layers(x)


def packed_projection(proj: nn.Linear, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`proj(x)` computed only at the rows where `mask` (batch, seq) is true; zeros elsewhere."""
    out = x.new_zeros(*mask.shape, proj.out_features)
    return out.masked_scatter(mask[..., None], proj(x[mask]))


class MultiHeadAttention(nn.Module):
    """Causal self-attention with separate query, key and value projections, as in the book."""

    def __init__(self, d_in: int, d_out: int, dropout: float, num_heads: int, qkv_bias: bool):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = dropout

    def forward(self, x, positions=None):
        """Causal attention at every position, or only at `positions` (one per row) when given:
        a classifier reads the last block at one position, and needs no other queries there."""
        b, t, _ = x.shape

        def heads(proj, inp):  # (b, n, d) -> (b, heads, n, head_dim)
            return proj(inp).view(b, inp.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        dropout = self.dropout if self.training else 0.0
        if positions is None:
            q, k, v = heads(self.W_query, x), heads(self.W_key, x), heads(self.W_value, x)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # Keys and values only where the query may look (no padding), queries only at `positions`.
            mask = torch.arange(t, device=x.device)[None, :] <= positions[:, None]
            k, v = (packed_projection(proj, x, mask).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                    for proj in (self.W_key, self.W_value))
            q = heads(self.W_query, x[torch.arange(b, device=x.device), positions][:, None])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout)
        return self.out_proj(y.transpose(1, 2).reshape(b, y.shape[2], -1))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(cfg.emb_dim, cfg.emb_dim, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.norm_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.norm_eps)
        self.drop_resid = nn.Dropout(cfg.drop_rate)

    def forward(self, x, positions=None):
        """The block's output at every position, or only at `positions` (see attention)."""
        h = self.att(self.norm1(x), positions)
        if positions is not None:
            x = x[torch.arange(x.shape[0], device=x.device), positions][:, None]
        x = x + self.drop_resid(h)
        return x + self.drop_resid(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def embed(self, in_idx):
        """Token plus position embeddings: the input of the first transformer block."""
        positions = torch.arange(in_idx.shape[1], device=in_idx.device)
        return self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))

    def forward(self, in_idx):
        x = self.trf_blocks(self.embed(in_idx))
        return self.out_head(self.final_norm(x))
