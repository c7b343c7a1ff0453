"""Batches of texts of similar length. Torch-free: the ONNX Runtime backend batches with it too."""

from __future__ import annotations


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Example indices grouped into batches of similar length, so short ones are not padded to long ones:
    `batch_size` examples each or, with `max_tokens`, as many (up to `batch_size`) as fit in that many
    padded positions, so a batch of short texts holds many and one of long texts few."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, batch = [], []
    for i in order:  # ascending: the newest example is the batch's widest
        if batch and (len(batch) == batch_size or (len(batch) + 1) * max(lengths[i], 1) > max_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch] if batch else batches
