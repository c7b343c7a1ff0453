"""The names of the classifier's policies and the rules read from a name alone: what trains, which
hidden state the head reads, the frozen prefix's precision, LoRA's head. Torch-free, so the run
schema (config.py) and a service without torch (the ONNX Runtime backend) can check a run by them;
the modules that carry each policy out import them from here.
"""

from __future__ import annotations

TRAINABLE = ("head", "last-block", "last-N-blocks", "all")  # N: any number of blocks, e.g. last-4-blocks
POOLINGS = ("last-token", "last-position", "mean")
PREFIX_DTYPES = ("auto", "float32", "bfloat16", "int8")
LORA_HEADS = ("adapter", "train")  # an adapter on the new head (the book's), or the head trained outright
WINDOW_COMBINES = ("mean", "max")  # how a long text's windows' logits become its own


def blocks_trained(trainable: str) -> int | None:
    """How many last blocks a policy trains (`last-block` 1, `last-4-blocks` 4, `head` 0); None when
    the name is not a policy (`all` trains everything, embeddings too)."""
    if trainable in ("head", "last-block"):
        return {"head": 0, "last-block": 1}[trainable]
    parts = trainable.split("-")
    if len(parts) == 3 and parts[0] == "last" and parts[2] == "blocks" and parts[1].isdigit() and int(parts[1]) > 0:
        return int(parts[1])
    return None


def valid_trainable(trainable: str) -> bool:
    return trainable == "all" or blocks_trained(trainable) is not None


def head_size(task: str, labels: list[str]) -> int:
    """The head's outputs: one per label, or one value for a regression."""
    return 1 if task == "regression" else len(labels)


def window_combine(task: str) -> str:
    """How a long text's windows' logits become its own (`pooling.combine_windows`): a label set's
    labels by their strongest window (a tag met anywhere in the text is the text's), else the mean."""
    return "max" if task == "multi-label" else "mean"


def needs_fixed_width(pooling: str) -> bool:
    """Whether the pooled state depends on the padded width (then every batch is padded to max_length
    and the cached features keep the pad positions too)."""
    return pooling == "last-position"
