"""Turn a language model into a classifier: a new head, a freezing policy, a pooling rule.

Both model families expose the same parts (`embed`, `trf_blocks`, `final_norm`, `out_head`), so a
classifier is the model with `out_head` replaced, run in two pieces: a frozen prefix (embedding and
the first blocks, computed without gradients, or read from the feature cache) and a trainable
suffix (the remaining blocks, the final norm, pooling and the head).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .names import blocks_trained
from .pooling import pool, pooled_positions, reads_one_position

def head_has_bias(family: str) -> bool:
    """GPT-2's head is the book's `Linear` with a bias (an export folds it exactly into the final
    LayerNorm's shift). The Llama family's has none, like transformers' `…ForSequenceClassification`
    heads: with RMSNorm there is no shift to fold a bias into, and a run must export exactly."""
    return family == "gpt2"


def add_classifier_head(model: nn.Module, num_classes: int, seed: int = 123, bias: bool | None = None) -> nn.Module:
    """Replace the vocabulary head with `Linear(emb_dim, num_classes)` (a bias: `head_has_bias`), made
    right after `torch.manual_seed(seed)` as the book does, so the same seed gives the same head."""
    torch.manual_seed(seed)
    bias = head_has_bias(model.cfg.family) if bias is None else bias
    model.out_head = nn.Linear(model.cfg.emb_dim, num_classes, bias=bias)
    return model


def first_trainable_block(n_layers: int, trainable: str) -> int:
    """Index of the first block that trains; `n_layers` when only the head trains, -1 for `all`
    (the embeddings train too)."""
    if trainable == "all":
        return -1
    n = blocks_trained(trainable)
    if n is None:
        raise ValueError(f"trainable must be head, last-block, last-N-blocks or all, not {trainable!r}")
    if n > n_layers:
        raise ValueError(f"{trainable}: the model has {n_layers} blocks")
    return n_layers - n


def freeze_all_but(model: nn.Module, trainable: str) -> tuple[int, int]:
    """Freeze everything except the chosen suffix; returns (trainable, total) parameter counts.

    `last-block` is the book's policy: the last transformer block, the final norm and the head.
    """
    start = first_trainable_block(len(model.trf_blocks), trainable)
    for p in model.parameters():
        p.requires_grad = trainable == "all"
    for block in model.trf_blocks[max(start, 0):]:
        block.requires_grad_(True)
    if trainable != "head":
        model.final_norm.requires_grad_(True)
    model.out_head.requires_grad_(True)
    return count_parameters(model)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def prefix_states(model: nn.Module, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Hidden states entering block `start` (the embedding output for start <= 0)."""
    x = model.embed(ids)
    for block in model.trf_blocks[: max(start, 0)]:
        x = block(x)
    return x


def run_block(block: nn.Module, x: torch.Tensor, positions=None, recompute: bool = False) -> torch.Tensor:
    """One block; with `recompute` (and gradients on), only its input is kept for the backward pass and
    its inside is computed again there: far less memory for a second forward pass."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, x, positions, use_reentrant=False)
    return block(x, positions)


def suffix_logits(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor, start: int, pooling: str,
                  recompute: bool = False) -> torch.Tensor:
    """Class logits from the hidden states entering block `start`.

    When pooling reads one position, the last block computes its queries and feed-forward only
    there (keys and values still cover every position): the same result for a fraction of the work.
    """
    blocks = model.trf_blocks[max(start, 0):]
    if not reads_one_position(pooling) or len(blocks) == 0:
        for block in blocks:
            x = run_block(block, x, recompute=recompute)
        return model.out_head(pool(model.final_norm(x), lengths, pooling))
    positions = pooled_positions(x, lengths, pooling)
    for block in blocks[:-1]:
        x = run_block(block, x, recompute=recompute)
    x = run_block(blocks[-1], x, positions, recompute)[:, 0]
    return model.out_head(model.final_norm(x))


def release_prefix(model: nn.Module, start: int) -> None:
    """Give back the memory of every weight `suffix_logits` does not read from `start` on (the
    embeddings and the blocks before `start`), for a model that will only ever see cached states:
    each becomes an empty tensor, so that a stray use fails loudly."""
    kept = {id(q) for part in (model.trf_blocks[max(start, 0):], model.final_norm, model.out_head)
            for q in part.parameters()}
    for q in model.parameters():
        if id(q) not in kept:
            q.data = torch.empty(0, dtype=q.dtype, device=q.device)


def classify_logits(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """Class logits for right-padded token ids: the whole network in one call."""
    return suffix_logits(model, prefix_states(model, ids, 0), lengths, 0, pooling)
