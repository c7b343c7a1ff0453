"""Metrics of a classifier on whole splits: the logits of every example (under torchrun each
process computes its share and the shares are joined in order), then one report per split:
loss, accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .batches import Collate, TextDataset, length_sorted_batches
from .data import SPLITS, load_data_split
from .device import autocast_for, resolve_device
from .distributed import current, gather_shards
from .errors import UserError
from .metrics import classification_report
from .prefix import run_logits, run_prefix
from .rundir import load_run, run_labels


@torch.no_grad()
def split_logits(dataset, lengths: list[int], batch_size: int, collate, logits_fn, device, num_classes: int,
                 n_global: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of a whole split, in the split's order. `dataset` is this process's
    share of the split's `n_global` examples; batches group examples of similar length."""
    logits = torch.zeros(len(dataset), num_classes)
    targets = torch.zeros(len(dataset), dtype=torch.long)
    for rows in length_sorted_batches(lengths, batch_size):
        inputs, target, lens = collate([dataset[i] for i in rows])
        logits[rows] = logits_fn(inputs.to(device), lens.to(device)).float().cpu()
        targets[rows] = target
    return gather_shards(logits, n_global), gather_shards(targets, n_global)


def logits_report(logits: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict:
    """Full-set metrics (loss per example, accuracy, per-class, confusion) of a split's logits."""
    loss = F.cross_entropy(logits, targets).item()
    return classification_report(targets.numpy(), logits.argmax(-1).numpy(), labels, loss)


# Texts per batch of a whole-split pass: the same as training's final metrics use, so that `evaluate`
# on the training's device groups the same texts together and gives the run's metrics.json.
SPLIT_BATCH_SIZE = 64


def evaluate_run(run_dir: Path, data_dir: Path, split: str = "test", device: str = "auto",
                 batch_size: int = SPLIT_BATCH_SIZE) -> dict:
    """Metrics of a saved classifier on one split of a prepared data directory, computed as the
    training computed its final metrics: the run's prefix precision, and bf16 autocast on CUDA."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}")
    dev = resolve_device(device)
    model, tokenizer, config = load_run(run_dir, str(dev))
    labels = run_labels(config)
    texts, targets = load_data_split(data_dir, split, labels)
    shard = current().shard(len(texts))
    ds = TextDataset([texts[i] for i in shard], [targets[i] for i in shard], tokenizer, config["max_length"],
                     truncation=config["truncation"])
    prefix, autocast = run_prefix(model, config, dev), autocast_for(dev)

    def logits_fn(ids, lengths):
        with autocast():
            return run_logits(model, prefix, ids, lengths, config["pooling"])

    with torch.inference_mode():
        logits, gathered = split_logits(ds, [len(e) for e in ds.encoded], batch_size,
                                        Collate(tokenizer.pad_id, config.get("pad_to")), logits_fn, dev,
                                        len(labels), len(texts))
    return logits_report(logits, gathered, labels)
