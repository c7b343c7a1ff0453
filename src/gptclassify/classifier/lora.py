"""LoRA, as the book's appendix E: beside a frozen `Linear`, a trainable low-rank update.

    y = x W^T + b + scale * (dropout(x) @ A @ B)        A: (in, rank), B: (rank, out)

A starts as the book's `LoRALayer` starts it (Kaiming-uniform, a = sqrt(5)) and B at zero, so
training starts from the pretrained function. The scale is peft's, alpha / rank; the book's
`LoRALayer` multiplies by alpha itself, so its setting (rank 16, alpha 16) is reached here with
`--lora-rank 16 --lora-alpha 256`.

`add_lora` wraps every Linear of the last `blocks` transformer blocks, and of the head (or trains
the head outright), and freezes everything else: the blocks before stay a frozen prefix, which the
feature cache computes once. `merge_lora` folds every update into its Linear (W + scale (A B)^T)
for saving: a finished run is a plain classifier that needs no LoRA code to be read.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.A = nn.Parameter(torch.empty(base.in_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as the book's LoRALayer
        self.B = nn.Parameter(torch.zeros(rank, base.out_features))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        base.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight W + scale (A B)^T (differentiable in A and B): for code that reads
        a projection's weight directly, such as attention with one query."""
        return self.base.weight + self.scale * (self.A @ self.B).T

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):
        return self.base(x) + self.scale * (self.dropout(x) @ self.A @ self.B)

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.to(self.base.weight.device)


def replace_linear(module: nn.Module, make) -> int:
    """Replace every nn.Linear under `module` by `make(linear)`; how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
            count += 1
        else:
            count += replace_linear(child, make)
    return count


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0, blocks: int | None = None,
             head: str = "adapter") -> tuple[int, int]:
    """Freeze `model`, put LoRA beside every Linear of its last `blocks` blocks (all when None)
    and of the head (`head="adapter"`, the book's) or train the head outright (`head="train"`).
    Returns (trainable, total) parameter counts."""
    n = len(model.trf_blocks)
    blocks = n if blocks is None else blocks
    if not 0 <= blocks <= n:
        raise ValueError(f"the model has {n} blocks, not {blocks}")
    model.requires_grad_(False)
    make = lambda linear: LoRALinear(linear, rank, alpha, dropout)  # noqa: E731
    for block in model.trf_blocks[n - blocks:]:
        replace_linear(block, make)
    if head == "adapter":
        model.out_head = make(model.out_head)
    else:
        model.out_head.requires_grad_(True)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRALinear into a plain Linear, in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters (every A and B) and the head: with the base weights, all a run needs."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith((".A", ".B"))}
    head = model.out_head.base if isinstance(model.out_head, LoRALinear) else model.out_head
    state.update({f"out_head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return state


def apply_adapter(model: nn.Module, state: dict[str, torch.Tensor], rank: int, alpha: float, blocks: int | None,
                  head: str) -> nn.Module:
    """A base model (with its vocabulary head) turned into the adapted classifier an
    `adapter.safetensors` describes."""
    num_classes, dim = state["out_head.weight"].shape
    model.out_head = nn.Linear(dim, num_classes, bias="out_head.bias" in state)
    with torch.no_grad():
        model.out_head.weight.copy_(state["out_head.weight"])
        if "out_head.bias" in state:
            model.out_head.bias.copy_(state["out_head.bias"])
    add_lora(model, rank, alpha, blocks=blocks, head=head)
    missing = [k for k in model.state_dict() if k.endswith((".A", ".B")) and k not in state]
    if missing:
        raise ValueError(f"the adapter file lacks {missing[0]}")
    model.load_state_dict({k: v for k, v in state.items() if k.endswith((".A", ".B"))}, strict=False)
    return model
