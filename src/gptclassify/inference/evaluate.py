"""`gptclassify evaluate`: a saved run's metrics on one split of a prepared data directory, computed
as its training computed its final metrics (`classifier.metrics`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.batches import Collate, TextDataset
from ..data.splits import SPLITS, dataset_info, load_data_split
from ..device import autocast_for, resolve_device
from ..distributed import current
from ..errors import UserError
from ..classifier.metrics import SPLIT_BATCH_SIZE, logits_report, split_logits
from ..classifier.prefix import run_logits, run_prefix
from ..classifier.pooling import combine_windows
from ..classifier.names import head_size, window_combine
from ..classifier.tasks import standardize
from ..rundir import load_run


def evaluate_run(run_dir: Path, data_dir: Path, split: str = "test", device: str = "auto",
                 batch_size: int = SPLIT_BATCH_SIZE) -> dict:
    """Metrics of a saved classifier on one split of a prepared data directory, computed as the
    training computed its final metrics: the run's prefix precision, and bf16 autocast on CUDA."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}")
    dev = resolve_device(device)
    model, tokenizer, config = load_run(run_dir, str(dev))
    labels, policy = config.labels, config.policy
    # The task `prepare` recorded; CSV files made by hand (no dataset.json) are read as the run's task.
    task, _, separator = dataset_info(data_dir) if (Path(data_dir) / "dataset.json").is_file() else \
        (config.task, [], "|")
    if task != config.task:
        raise UserError(f"{data_dir} holds {task} data; the run was trained for {config.task}")
    if task == "regression":
        texts, values = load_data_split(data_dir, split, labels, task, separator)
        targets = standardize(values, config.target_scale)  # as the run trained: reported in the target's units
    else:
        texts, targets = load_data_split(data_dir, split, labels, task, separator)
    shard = current().shard(len(texts))
    ds = TextDataset([texts[i] for i in shard], [targets[i] for i in shard], tokenizer, policy.max_length,
                     truncation=policy.truncation, chunking=policy.chunking)
    prefix = run_prefix(model, policy.first_trainable_block, config.training.trainable, policy.prefix_dtype, dev)
    autocast = autocast_for(dev)

    def logits_fn(ids, lengths, owners=None):
        with autocast():
            logits = run_logits(model, prefix, ids, lengths, policy.pooling)
        return logits if owners is None else combine_windows(logits.float(), owners, window_combine(task))

    with torch.inference_mode():
        logits, gathered = split_logits(ds, ds.sizes, batch_size,
                                        Collate(tokenizer.pad_id, policy.pad_to), logits_fn, dev,
                                        head_size(task, labels), len(texts))
    return logits_report(logits, gathered, labels, task, config.thresholds, config.target_scale,
                         config.training.loss == "huber", config.temperature)
