"""Greedy generation, for smoke-testing a model's weights (no sampling, no KV cache)."""

from __future__ import annotations

import torch


@torch.inference_mode()
def generate(model, idx: torch.Tensor, max_new_tokens: int, eos_id: int | None = None) -> torch.Tensor:
    """Append `max_new_tokens` greedy tokens to each row of `idx` (batch, seq)."""
    context = model.cfg.context_length
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context:])[:, -1, :]
        next_id = logits.argmax(dim=-1, keepdim=True)
        idx = torch.cat([idx, next_id], dim=1)
        if eos_id is not None and bool((next_id == eos_id).all()):
            break
    return idx


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 20) -> str:
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    return tokenizer.decode(generate(model, idx, max_new_tokens)[0].tolist())
