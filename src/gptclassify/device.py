"""Where tensors live and in what precision they compute: shared by training, evaluation,
prediction and serving, so none of them reaches into another for it."""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA (the local rank's GPU under torchrun), then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is available")
    return device


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


# A pass without gradients (the frozen pass, prediction) over many texts: on a GPU, one batch of 32
# short texts is a few hundred positions, far too little work per kernel launch, so batches there are
# filled up to this many padded positions. Measured on an H200 (benchmarks/gpu.py, SMS x10, the
# frozen blocks alone): 3.5% of the dense bf16 peak at 32 texts a batch for GPT-2 124M, 26.5% at
# 16,384 positions, 26.9% at 65,536, 21.1% at 262,144 (a 0.5B model: 5.0%, 27.6%, 27.3%, 23.1%).
GPU_BATCH_TOKENS = 16384
GPU_BATCH_TEXTS = 4096


def no_grad_batching(device: torch.device, batch_size: int) -> tuple[int, int | None]:
    """(texts, padded positions) per batch of a pass without gradients: `batch_size` texts on a CPU
    (the positions unbounded), as many texts as fill GPU_BATCH_TOKENS positions on CUDA."""
    if device.type == "cuda":
        return max(batch_size, GPU_BATCH_TEXTS), GPU_BATCH_TOKENS
    return batch_size, None
