"""The frozen-prefix feature cache.

When only a suffix of the network trains and the frozen prefix has no active dropout, the prefix
is a pure function of each example: its output (the hidden states entering the first trainable
block) is computed once and every epoch and evaluation runs only the suffix.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from ..data.batches import Collate, TextDataset, flatten_windows, label_tensor
from ..data.lengths import length_sorted_batches
from ..classifier.names import needs_fixed_width
from ..classifier.pooling import stored_width
from ..errors import env_number
from ..failpoints import failpoint


def cache_unavailable_reason(model, trainable: str) -> str | None:
    """Why the cache cannot be used for this model and policy, or None when it can."""
    if trainable == "all":
        return "every layer trains (--trainable all), so there is no frozen prefix to cache"
    if getattr(model.cfg, "drop_rate", 0.0) > 0:
        return f"the frozen layers have dropout {model.cfg.drop_rate}, so their output is not fixed"
    return None


@dataclass
class FeatureStore:
    """Per-example hidden states of varying length, kept in one flat (positions, dim) tensor."""

    flat: torch.Tensor
    offsets: list[int]
    widths: list[int]

    def __len__(self):
        return len(self.offsets)

    def get(self, i: int) -> torch.Tensor:
        return self.flat[self.offsets[i]: self.offsets[i] + self.widths[i]]


def memory_budget() -> int:
    """Bytes of features kept in RAM before the cache goes to a memory-mapped file on disk."""
    if "GPTCLASSIFY_CACHE_MEMORY" in os.environ:
        return int(env_number("GPTCLASSIFY_CACHE_MEMORY", 0, "a number of bytes"))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 4 << 30


def _allocate(positions: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    nbytes = positions * dim * torch.finfo(dtype).bits // 8
    if nbytes <= memory_budget():
        return torch.empty(positions, dim, dtype=dtype)
    # Too big for RAM: a file-backed array (deleted at once; the mapping keeps it alive).
    np_dtype = np.uint16 if dtype == torch.bfloat16 else np.float32
    fd, path = tempfile.mkstemp(prefix="gptclassify-features-", dir=os.environ.get("GPTCLASSIFY_CACHE_DIR"))
    os.close(fd)
    array = np.memmap(path, dtype=np_dtype, mode="w+", shape=(positions, dim))
    os.unlink(path)
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


def feature_widths(dataset: TextDataset, pad_to: int | None, pooling: str) -> list[int]:
    return [stored_width(len(e), pad_to, pooling) for e in dataset.encoded]


def where_features_live(positions: int, dim: int, dtype: torch.dtype) -> tuple[int, str]:
    """Bytes the cached features take, and where they will be kept (the log says it before the pass)."""
    nbytes = positions * dim * torch.finfo(dtype).bits // 8
    return nbytes, "in RAM" if nbytes <= memory_budget() else "in a memory-mapped file on disk"


@torch.no_grad()
def build_feature_store(prefix, dataset: TextDataset, *, pad_id: int, pad_to: int | None, pooling: str,
                        batch_size: int, device, flat: torch.Tensor | None = None, progress=None,
                        max_tokens: int | None = None, also: dict[int, torch.Tensor] | None = None) -> FeatureStore:
    """Run the frozen prefix (`prefix.FrozenPrefix`: embedding and blocks before the first trainable
    one) once over every example, into `flat` (a file-backed tensor of the on-disk cache) or into
    memory; `progress.update(positions)` after each batch. Batches of `batch_size` examples, or as
    many as fit in `max_tokens` padded positions (`device.no_grad_batching`). `also` maps other
    first trainable blocks to the tensors that take the states entering them, from the same run (the
    prefix runs on to the last of them): what a prefix ending there would have written."""
    widths, also = feature_widths(dataset, pad_to, pooling), also or {}
    if flat is None:
        flat = _allocate(int(sum(widths)), prefix.model.cfg.emb_dim, prefix.out_dtype)
    store = store_from(flat, widths)
    collate = Collate(pad_id, pad_to if needs_fixed_width(pooling) else None)
    starts, outputs = (prefix.start, *also), (flat, *also.values())
    runner = prefix.reaching(max(starts))
    for rows in length_sorted_batches(widths, batch_size, max_tokens):
        ids, _, _ = collate([(dataset.encoded[i], 0) for i in rows])  # windows, for a text held as several
        src, dest = scatter_indices(rows, widths, store.offsets, ids.shape[1])
        for states, out in zip(runner.states_at(ids.to(device, non_blocking=True), starts), outputs):
            kept = states.reshape(-1, states.shape[-1])[src.to(states.device)]  # the real positions, row after row
            out[dest.to(out.device)] = kept.to(out.device, out.dtype)
        if progress is not None:
            progress.update(sum(widths[i] for i in rows))
        failpoint("frozen-pass")
    return store



def scatter_indices(rows: list[int], widths: list[int], offsets: list[int], padded: int):
    """For examples `rows` batched as (len(rows), padded) positions: which rows of the flattened batch
    are kept (the first widths[i] of each example's), and where each goes in the store's flat tensor."""
    w = np.asarray([widths[i] for i in rows], dtype=np.int64)
    within = np.arange(int(w.sum()), dtype=np.int64) - np.repeat(np.cumsum(w) - w, w)
    src = np.repeat(np.arange(len(rows), dtype=np.int64) * padded, w) + within
    dest = np.repeat(np.asarray([offsets[i] for i in rows], dtype=np.int64), w) + within
    return torch.from_numpy(src), torch.from_numpy(dest)


def store_from(flat: torch.Tensor, widths: list[int]) -> FeatureStore:
    """A FeatureStore over `flat`: example i's states are the `widths[i]` rows after the ones before it."""
    ends = np.cumsum(np.asarray(widths, dtype=np.int64))
    return FeatureStore(flat, (ends - np.asarray(widths, dtype=np.int64)).tolist(), widths)


class FeatureDataset(torch.utils.data.Dataset):
    """Cached hidden states with their labels and true token lengths; a text held as windows
    (`TextDataset.spans`) is the list of its windows' states and lengths."""

    def __init__(self, store: FeatureStore, dataset: TextDataset):
        self.store, self.labels, self.spans = store, dataset.labels, dataset.spans
        self.lengths = [len(e) for e in dataset.encoded]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.spans is None:
            return self.store.get(i), self.labels[i], self.lengths[i]
        start, end = self.spans[i]
        return [self.store.get(j) for j in range(start, end)], self.labels[i], self.lengths[start:end]


def collate_features(batch):
    """Pad hidden states with zeros to the batch's widest; causal attention never reads them. States
    kept on a GPU are batched there; labels and lengths stay in host memory like every batch's, pinned
    then, so that their copy to the GPU (`non_blocking`) does not make the CPU wait for the GPU.
    Texts held as windows are batched window after window, with which text each window is of."""
    states, labels, lengths = zip(*batch)
    owners = None
    if isinstance(states[0], list):
        states, owners = flatten_windows(states)
        lengths = [n for ns in lengths for n in ns]
    width = max(s.shape[0] for s in states)
    x = states[0].new_zeros(len(states), width, states[0].shape[1], dtype=torch.float32)
    for r, s in enumerate(states):
        x[r, : s.shape[0]] = s
    labels, lengths = label_tensor(labels), torch.tensor(lengths, dtype=torch.long)
    if x.is_cuda:
        labels, lengths = labels.pin_memory(), lengths.pin_memory()
        owners = owners.pin_memory() if owners is not None else None
    return (x, labels, lengths) if owners is None else (x, labels, lengths, owners)


# Share of the GPU's free memory the cached states may take when they are moved there.
GPU_FEATURES_SHARE = 0.5


def gpu_room_for(nbytes: int, device: torch.device) -> str | None:
    """None when `nbytes` of states fit in GPU_FEATURES_SHARE of the GPU's free memory; else why not."""
    if device.type != "cuda":
        return "not on a GPU"
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes > GPU_FEATURES_SHARE * free:
        return f"{nbytes / 1e9:.2f} GB is over half the GPU's free {free / 1e9:.1f} GB"
    return None


def keep_on_gpu(features: dict[str, FeatureDataset], device: torch.device) -> str | None:
    """Move the cached states onto the GPU when they fit (`gpu_room_for`), so that each step makes
    its batch there instead of copying it over; why not, for the log, if not."""
    why_not = gpu_room_for(sum(f.store.flat.numel() * f.store.flat.element_size() for f in features.values()), device)
    if why_not:
        return why_not
    for f in features.values():
        f.store.flat = f.store.flat.to(device)
    return None
