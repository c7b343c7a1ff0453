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
        if positions is not None:
            return self.attend_one_query(x, positions)
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.W_query, self.W_key, self.W_value))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))

    def attend_one_query(self, x, positions):
        """Attention for the one query at `positions[i]` of each row i, over positions <= it.

        With one query, no key or value needs projecting: per head h,
            q . (W_k x_t + b_k) = (W_k^T q) . x_t + q . b_k      (the last term is the same for every
                                                               t, and softmax ignores it)
            sum_t a_t (W_v x_t + b_v) = W_v (sum_t a_t x_t) + (sum_t a_t) b_v
        so the query is moved into input space once and the attention weights mix the inputs:
        the same numbers as projecting every key and value, for about 1/t of the work.
        """
        b, t, d_in = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.W_query(x[torch.arange(b, device=x.device), positions]).view(b, heads, head_dim)
        q_in = torch.einsum("bhe,hed->bhd", q, self.W_key.weight.view(heads, head_dim, d_in))
        scores = torch.einsum("bhd,btd->bht", q_in, x) / head_dim ** 0.5
        visible = torch.arange(t, device=x.device)[None, :] <= positions[:, None]
        scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        mixed = torch.einsum("bht,btd->bhd", weights, x)
        y = torch.einsum("bhd,hed->bhe", mixed, self.W_value.weight.view(heads, head_dim, d_in))
        if self.W_value.bias is not None:
            y = y + weights.sum(dim=-1, keepdim=True) * self.W_value.bias.view(heads, head_dim)
        return self.out_proj(y.reshape(b, 1, heads * head_dim))


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
