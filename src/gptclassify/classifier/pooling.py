"""Pooling: which hidden state of a text the classification head reads. The one home of this policy;
models compute positions, and everything else asks here.

`last-token`: each text's last real token (what a causal model has read all of).
`last-position`: the book's `[:, -1, :]`, the last position of a padded batch: a pad token for every
shorter text, so every batch must be padded to the same width (`needs_fixed_width`).
`mean`: the mean over real tokens.
"""

from __future__ import annotations

import torch

from .names import POOLINGS, WINDOW_COMBINES, needs_fixed_width


def reads_one_position(pooling: str) -> bool:
    """Whether the head reads a single position (then the last block computes only that query)."""
    return pooling != "mean"


def stored_width(n_tokens: int, pad_to: int | None, pooling: str) -> int:
    """Positions of a text kept by the frozen pass: its tokens, or the fixed width when pooling needs it."""
    return pad_to if needs_fixed_width(pooling) and pad_to else n_tokens


def pool(hidden: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, seq, dim) -> (batch, dim).

    `last-token`: each sequence's last real token (what a causal model has read all of).
    `last-position`: the book's `[:, -1, :]`, which is a pad token for every shorter message.
    `mean`: the mean over real tokens.
    """
    if needs_fixed_width(pooling):
        return hidden[:, -1, :]
    if pooling == "last-token":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
    if pooling == "mean":
        mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
        return (hidden * mask[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)
    raise ValueError(f"pooling must be one of {POOLINGS}")


def pooled_positions(x: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    if needs_fixed_width(pooling):
        return torch.full_like(lengths, x.shape[1] - 1)
    return lengths - 1


def combine_windows(logits: torch.Tensor, owners: torch.Tensor, how: str) -> torch.Tensor:
    """(windows, k) logits -> (texts, k): each text's windows' logits averaged (`mean`), or their
    largest per output (`max`: a label present in any window is present in the text). `owners`
    numbers each window's text, 0..texts-1, in order. Gradients reach every window (mean) or the
    one that gave each maximum (max)."""
    n = int(owners[-1]) + 1 if len(owners) else 0
    if how == "mean":
        counts = torch.bincount(owners, minlength=n).to(logits.dtype)
        return logits.new_zeros(n, logits.shape[1]).index_add(0, owners, logits) / counts[:, None]
    if how == "max":
        index = owners[:, None].expand_as(logits)
        return logits.new_full((n, logits.shape[1]), float("-inf")).scatter_reduce(0, index, logits, "amax",
                                                                                  include_self=False)
    raise ValueError(f"combine must be one of {WINDOW_COMBINES}")
