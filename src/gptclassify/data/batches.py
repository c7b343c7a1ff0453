"""Token ids for training and evaluation: a Dataset of truncated sequences and a collate function
that pads each batch only to its own longest member (or to a fixed length, as the book does)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .chunks import Chunking, dropped_tokens, encode_whole, windows
from .tokenizer import keep


class TextDataset(Dataset):
    """Texts encoded once and truncated to `max_length` tokens by a truncation policy (`keep`),
    with integer labels; `cut` and `dropped` count the texts cut and the tokens they lost.

    With `truncation="chunks"`, a longer text becomes up to `chunking.max_chunks` windows
    (`chunks.windows`): `encoded` then holds every window, text after text, `spans[i]` the range
    of text i's windows, and an item is (its windows, its label)."""

    def __init__(self, texts: list, labels: list, tokenizer, max_length: int | None = None,
                 context_length: int | None = None, truncation: str = "head", chunking: Chunking | None = None):
        pairs = any(isinstance(t, tuple) for t in texts)  # (text, text_pair): joined and cut by `Tokenizer.fit`
        chunked = truncation == "chunks"
        if pairs and chunked:
            raise UserError("--truncation chunks reads one long text in windows; pairs of texts are cut by "
                            "--truncation head, tail or head+tail")
        chunking, budget = chunking or Chunking(), max_length or context_length
        full = [encode_whole(tokenizer, t, budget, chunking) if chunked and budget else
                tokenizer.encode_raw(t, budget, truncation) if pairs else
                tokenizer.encode(t, budget, truncation) for t in texts]
        sizes = [tokenizer.raw_length(e) for e in full] if pairs else [len(e) for e in full]
        longest = max(sizes, default=1)
        if max_length is None:  # the book: the longest example, capped by the model's context
            max_length = longest if context_length is None else min(longest, context_length)
        self.max_length, self.spans = max_length, None
        fixed = len(getattr(tokenizer, "prefix", ()))
        if chunked:
            per_text = [windows(e, max_length, chunking, fixed) for e in full]
            ends = list(accumulate(len(w) for w in per_text))
            self.spans = [(end - len(w), end) for w, end in zip(per_text, ends)]
            self.encoded = [w for ws in per_text for w in ws]
            self.dropped = sum(dropped_tokens(n, max_length, chunking, fixed) for n in sizes)
        else:
            self.encoded = [tokenizer.fit(e, max_length, truncation) for e in full] if pairs else \
                [keep(e, max_length, truncation, fixed) for e in full]
            self.dropped = sum(max(0, n - max_length) for n in sizes)
        self.cut = sum(n > max_length for n in sizes)
        self.labels = list(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.spans is None:
            return self.encoded[i], self.labels[i]
        start, end = self.spans[i]
        return self.encoded[start:end], self.labels[i]

    @property
    def sizes(self) -> list[int]:
        """Token positions of each text (all its windows'): what batching by length sorts on."""
        if self.spans is None:
            return [len(e) for e in self.encoded]
        return [sum(len(e) for e in self.encoded[start:end]) for start, end in self.spans]

    @property
    def windows(self) -> int:
        return len(self.encoded)


@dataclass
class Collate:
    """Pad a batch with `pad_id` to its longest sequence, or to `pad_to` when given. Texts held as
    windows (`TextDataset` with chunks) are batched window after window, and a fourth tensor says
    which text of the batch each window belongs to."""

    pad_id: int
    pad_to: int | None = None

    def __call__(self, batch):
        seqs, labels = zip(*batch)
        owners = None
        if seqs and isinstance(seqs[0], list) and seqs[0] and isinstance(seqs[0][0], list):
            seqs, owners = flatten_windows(seqs)
        width = self.pad_to or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        batch = ids, label_tensor(labels), lengths
        return batch if owners is None else (*batch, owners)


def flatten_windows(groups) -> tuple[list, torch.Tensor]:
    """Texts held as lists of windows -> every window, text after text, and the text each is of."""
    owners = torch.tensor([i for i, ws in enumerate(groups) for _ in ws], dtype=torch.long)
    return [w for ws in groups for w in ws], owners


def label_tensor(labels) -> torch.Tensor:
    """Class ids as int64; numbers (regression) and 0/1 rows (multi-label) as float32."""
    floats = len(labels) > 0 and isinstance(labels[0], (float, list))
    return torch.tensor(labels, dtype=torch.float32 if floats else torch.long)


# --batch-order by-length: the shuffled order is cut in groups of this many batches, each batched by
# length (as transformers' LengthGroupedSampler makes its "megabatches").
GROUP_BATCHES = 50


def by_length(order: list[int], sizes, batch_size: int, generator=None) -> list[list[int]]:
    """A shuffled `order`'s texts batched with texts of similar length: the order cut in groups of
    GROUP_BATCHES batches, each group sorted by length and cut into batches (the short one, if any,
    of the longest texts: the fewest padded positions), then the batches' order drawn from
    `generator` (None: the global RNG). Every text once; at most one short batch."""
    group, batches = GROUP_BATCHES * batch_size, []
    for start in range(0, len(order), group):
        part = sorted(order[start:start + group], key=lambda i: sizes[i])
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class ByLength:
    """A DataLoader's `batch_sampler` for --batch-order by-length: each epoch a new shuffle of
    `len(sizes)` texts from `generator`, batched by `by_length`."""

    def __init__(self, sizes: list[int], batch_size: int, generator: torch.Generator):
        self.sizes, self.batch_size, self.generator = sizes, batch_size, generator

    def __len__(self):
        return -(-len(self.sizes) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.sizes), generator=self.generator).tolist()
        return iter(by_length(order, self.sizes, self.batch_size, self.generator))


class ShardedLoader:
    """Global batches of a split, each cut to the examples this process holds.

    The global order comes from a DataLoader over the example indices, shuffled from the global
    RNG exactly as the book's `DataLoader(shuffle=True)` is, so one process or many visit the same
    batches in the same order. `dataset` holds this process's share: global example `i` is its
    item `i // world.size` when `i % world.size == world.rank`. Yields `(batch or None, global size)`.
    With `sizes` (every example's length), the shuffled order is batched `by_length`. With `parts`
    (the global sizes of several splits whose shares `dataset` holds one after the other), global
    example `i` is the splits' examples in turn, each split shared out as above.
    """

    def __init__(self, dataset, n_global: int, batch_size: int, collate, world, shuffle=False, drop_last=False,
                 sizes: list[int] | None = None, parts: list[int] | None = None):
        self.dataset, self.collate, self.world, self.sizes = dataset, collate, world, sizes
        self.batch_size, self.parts = batch_size, parts or [n_global]
        self.order = DataLoader(range(n_global), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                collate_fn=list)

    def __len__(self):
        return len(self.order)

    def draw_order(self) -> list[list[int]]:
        """One epoch's global batches, drawn from the global RNG as iterating the loader draws them
        (by length: that order's texts, batched `by_length`, the batches' order from the global RNG too)."""
        order = list(self.order)
        if self.sizes is None:
            return order
        return by_length([i for batch in order for i in batch], self.sizes, self.batch_size)

    def batches(self, order, skip: int = 0):
        for indices in order[skip:] if skip else order:
            mine = [j for j in map(self.local, indices) if j is not None]
            yield (self.collate([self.dataset[j] for j in mine]) if mine else None), len(indices)

    def local(self, i: int) -> int | None:
        """Global example `i`'s index in this process's `dataset`, or None when another holds it."""
        size, rank, before = self.world.size, self.world.rank, 0
        for n in self.parts:
            if i < n:
                return before + i // size if i % size == rank else None
            i, before = i - n, before + len(range(rank, n, size))
        raise IndexError(f"example {i} is past the {sum(self.parts)} this loader holds")

    def __iter__(self):
        return self.batches(self.order)
