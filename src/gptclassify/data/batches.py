"""Token ids for training and evaluation: a Dataset of truncated sequences and a collate function
that pads each batch only to its own longest member (or to a fixed length, as the book does)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import keep


class TextDataset(Dataset):
    """Texts encoded once and truncated to `max_length` tokens by a truncation policy (`keep`),
    with integer labels; `cut` and `dropped` count the texts cut and the tokens they lost."""

    def __init__(self, texts: list, labels: list, tokenizer, max_length: int | None = None,
                 context_length: int | None = None, truncation: str = "head"):
        pairs = any(isinstance(t, tuple) for t in texts)  # (text, text_pair): joined and cut by `Tokenizer.fit`
        full = [tokenizer.encode_raw(t, max_length or context_length, truncation) if pairs else
                tokenizer.encode(t, max_length or context_length, truncation) for t in texts]
        sizes = [tokenizer.raw_length(e) for e in full] if pairs else [len(e) for e in full]
        longest = max(sizes, default=1)
        if max_length is None:  # the book: the longest example, capped by the model's context
            max_length = longest if context_length is None else min(longest, context_length)
        self.max_length = max_length
        self.encoded = [tokenizer.fit(e, max_length, truncation) for e in full] if pairs else \
            [keep(e, max_length, truncation, len(getattr(tokenizer, "prefix", ()))) for e in full]
        self.cut = sum(n > max_length for n in sizes)
        self.dropped = sum(max(0, n - max_length) for n in sizes)
        self.labels = list(labels)

    def __len__(self):
        return len(self.encoded)

    def __getitem__(self, i):
        return self.encoded[i], self.labels[i]


@dataclass
class Collate:
    """Pad a batch with `pad_id` to its longest sequence, or to `pad_to` when given."""

    pad_id: int
    pad_to: int | None = None

    def __call__(self, batch):
        seqs, labels = zip(*batch)
        width = self.pad_to or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return ids, label_tensor(labels), lengths


def label_tensor(labels) -> torch.Tensor:
    """Class ids as int64; numbers (regression) and 0/1 rows (multi-label) as float32."""
    floats = len(labels) > 0 and isinstance(labels[0], (float, list))
    return torch.tensor(labels, dtype=torch.float32 if floats else torch.long)


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


class ShardedLoader:
    """Global batches of a split, each cut to the examples this process holds.

    The global order comes from a DataLoader over the example indices, shuffled from the global
    RNG exactly as the book's `DataLoader(shuffle=True)` is, so one process or many visit the same
    batches in the same order. `dataset` holds this process's share: global example `i` is its
    item `i // world.size` when `i % world.size == world.rank`. Yields `(batch or None, global size)`.
    """

    def __init__(self, dataset, n_global: int, batch_size: int, collate, world, shuffle=False, drop_last=False):
        self.dataset, self.collate, self.world = dataset, collate, world
        self.order = DataLoader(range(n_global), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                collate_fn=list)

    def __len__(self):
        return len(self.order)

    def draw_order(self) -> list[list[int]]:
        """One epoch's global batches, drawn from the global RNG as iterating the loader draws them."""
        return list(self.order)

    def batches(self, order, skip: int = 0):
        size, rank = self.world.size, self.world.rank
        for indices in order[skip:] if skip else order:
            mine = [i // size for i in indices if i % size == rank]
            yield (self.collate([self.dataset[j] for j in mine]) if mine else None), len(indices)

    def __iter__(self):
        return self.batches(self.order)
