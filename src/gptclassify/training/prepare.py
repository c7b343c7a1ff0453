"""Everything a training run needs before its first step, built in the order the book builds it:
the data, the model with its new head and freezing policy, the tokens, the frozen pass, the loaders.

`prepare` is a plain function that returns a `Prepared` (a dataclass, no methods with effects);
`run.train` takes it from there. Under torchrun every process prepares its own share of the
examples (`distributed.py`); only rank 0 logs and writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

from ..classifier.head import add_classifier_head, first_trainable_block, freeze_all_but
from ..classifier.lora import add_lora
from ..classifier.prefix import FrozenPrefix, describe_cpu, first_trainable_block_fits, resolve_prefix_dtype
from ..config import DEFAULT_MAX_LENGTH, TrainConfig, with_family_defaults
from ..data.batches import ShardedLoader, TextDataset
from ..classifier.names import head_size, window_combine
from ..classifier.tasks import standardize
from ..data.splits import SPLITS, dataset_info, load_data_split
from ..data.tokenizer import Tokenizer
from ..device import autocast_for, resolve_device
from ..distributed import World, all_max, all_reduce_sum, current, launched
from ..errors import UserError
from ..weights import load_model_and_tokenizer
from .checkpoint import has_checkpoint, save_start
from .frozen_pass import Inputs, frozen_pass
from .steps import make_logits_fn


@dataclass
class Classifier:
    """The language model with its new head, frozen but for what trains, and its frozen prefix."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    model_name: str  # the architecture's name, as recorded
    cfg: TrainConfig  # with the model family's defaults filled in
    start: int  # the first trainable block (-1: everything trains, the embeddings too)
    prefix: FrozenPrefix  # the blocks before `start`, in their own precision
    trainable: int  # parameter counts
    total: int
    load_seconds: float


@dataclass
class Tokenized:
    """This process's share of each split, tokenized and cut to the length policy."""

    datasets: dict[str, TextDataset]
    max_length: int
    pad_to: int | None  # every batch padded to this width (the book's, or last-position pooling), else None


@dataclass
class Prepared:
    """A run ready for its first step."""

    given_model: str | None  # --model as the user gave it (None: taken from the weights)
    weights: str
    data_dir: Path
    run_dir: Path
    world: World
    device: torch.device
    labels: list[str]
    texts: dict[str, tuple[list[str], list]]  # every split's texts and targets (all of them; see tasks.py)
    classifier: Classifier
    tokens: Tokenized
    inputs: Inputs  # what the trainable suffix reads: cached states, or token ids
    loaders: dict[str, ShardedLoader]
    logits_fn: object  # (inputs, lengths) -> class logits
    log: object
    task: str = "single-label"  # classifier/tasks.py
    target_scale: tuple[float, float] | None = None  # regression: the training targets' mean and std

    @property
    def cfg(self) -> TrainConfig:
        return self.classifier.cfg

    @property
    def model(self) -> torch.nn.Module:
        return self.classifier.model

    @property
    def train_on(self) -> tuple[str, ...]:
        """The splits that train: the training split, and for tune's winner the validation split too
        (then `make_loaders` made no validation loader)."""
        return ("train",) if "validation" in self.loaders else ("train", "validation")

    @property
    def held_out(self) -> bool:
        """Whether the validation split is held out."""
        return self.train_on == ("train",)

    def training_targets(self) -> list:
        """The targets of every text that trains."""
        return [y for split in self.train_on for y in self.texts[split][1]]

    def run_info(self) -> dict:
        return run_info_of(self.classifier.model_name, self.given_model, self.weights, self.data_dir, self.train_on)


def run_info_of(model_name: str, model: str | None, weights: str, data_dir: Path, train_on: tuple[str, ...]) -> dict:
    """What `--resume` needs to build the same run again (kept in every checkpoint); a run that
    trains on more than the training split (tune's winner) says so, and `--resume` refuses it."""
    return {"model_name": model_name, "model": model, "weights": weights, "data": str(data_dir)} | \
        ({} if train_on == ("train",) else {"train_on": list(train_on)})


def prepare(model: str | None, weights: str | None, data_dir: Path, cfg: TrainConfig, run_dir: Path,
            log=print, also_keep: tuple[str, ...] = (), train_on: tuple[str, ...] = ("train",)) -> Prepared:
    """Everything before the first step. `also_keep`: other trainable policies (`last-2-blocks`...)
    whose frozen states the frozen pass keeps in the feature cache too, from the same pass;
    `train_on`: the splits that train (`make_loaders`)."""
    world = current()
    log = log if world.is_main else quiet
    data_dir, run_dir, weights = Path(data_dir), Path(run_dir), weights or model or "gpt2"
    task, labels, separator = dataset_info(data_dir)
    check_task_settings(task, cfg)
    texts = {split: load_data_split(data_dir, split, labels, task, separator) for split in SPLITS}
    if len(texts["train"][0]) < world.size:
        raise UserError(f"{len(texts['train'][0])} training examples cannot be shared by {world.size} processes")
    texts, target_scale = standardized(texts) if task == "regression" else (texts, None)
    if target_scale:
        log(f"regression target: mean {target_scale[0]:.4g}, std {target_scale[1]:.4g} over the training split "
            "(trained standardized, reported in its own units)")
    device = resolve_device(cfg.device)
    classifier = build_classifier(model, weights, cfg, head_size(task, labels), device, log)
    if world.is_main and not has_checkpoint(run_dir):  # from here on, a killed run can be resumed
        save_start(run_dir / "checkpoint", classifier.cfg,
                   run_info_of(classifier.model_name, model, weights, data_dir, train_on))
    if launched():
        log(f"data parallel: {world.describe()}; each holds 1/{world.size} of the examples")
    tokens = tokenize(texts, classifier, world, log)
    n_layers = len(classifier.model.trf_blocks)
    inputs = frozen_pass(classifier, tokens, world, device, log, {"model": classifier.model_name, "weights": weights,
                                                                   "data_dir": data_dir},
                         tuple(first_trainable_block(n_layers, t) for t in also_keep
                               if first_trainable_block_fits(classifier.model, t)))
    loaders = make_loaders(inputs, tokens, texts, classifier.cfg, world, train_on)
    logits_fn = make_logits_fn(classifier.model, classifier.start, classifier.cfg.pooling, inputs.cached,
                               autocast_for(device), classifier.prefix, classifier.cfg.recompute_blocks,
                               window_combine(task))
    return Prepared(model, weights, data_dir, run_dir, world, device, labels, texts, classifier, tokens, inputs,
                    loaders, logits_fn, log, task, target_scale)


def check_task_settings(task: str, cfg: TrainConfig) -> None:
    """Settings that mean nothing for the data's task, refused in one line."""
    if task != "single-label" and cfg.epoch_eval_iter is not None:
        raise UserError(f"the book's first-batches accuracy (the book preset) is for single-label data, not {task}")
    if task == "regression" and cfg.class_weight:
        raise UserError("--class-weight weighs classes: a regression target has none")
    if task == "regression" and cfg.select_by == "macro-f1":
        raise UserError("--select-by macro-f1 needs classes: a regression run selects by loss or accuracy (R²)")
    if task != "regression" and cfg.loss == "huber":
        raise UserError(f"--loss huber is for a regression target, not {task} data")


def standardized(texts: dict) -> tuple[dict, tuple[float, float]]:
    """Regression targets as (value - mean) / std of the training split's."""
    train = torch.tensor(texts["train"][1], dtype=torch.float64)
    mean, std = train.mean().item(), train.std(correction=0).item() if len(train) > 1 else 1.0
    std = std or 1.0
    return {s: (t, standardize(y, (mean, std))) for s, (t, y) in texts.items()}, (mean, std)


def build_classifier(model_name: str | None, weights: str, cfg: TrainConfig, num_classes: int, device, log) -> Classifier:
    """The pretrained model, its new head (seeded as the book does), the freezing policy or LoRA
    adapters, and the frozen prefix in its precision."""
    started = time.perf_counter()
    model, tokenizer, name = load_model_and_tokenizer(model_name, weights)
    load_seconds = time.perf_counter() - started
    cfg = with_family_defaults(cfg, model.cfg.family, getattr(model.cfg, "model_type", None))  # the model's rate
    if cfg.trainable == "lora" and cfg.lora_rank > model.cfg.emb_dim:
        raise UserError(f"--lora-rank {cfg.lora_rank} is over the model's width ({model.cfg.emb_dim}): "
                        "an update of that rank is a full matrix")
    add_classifier_head(model, num_classes, seed=cfg.seed)
    n_layers = len(model.trf_blocks)
    try:
        if cfg.trainable == "lora":  # the adapters' A drawn right after the head, from the same seed
            lora_blocks = n_layers if cfg.lora_blocks is None else cfg.lora_blocks
            trainable, total = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, lora_blocks,
                                        cfg.lora_head)
            start = n_layers - lora_blocks
        else:
            start = first_trainable_block(n_layers, cfg.trainable)
            trainable, total = freeze_all_but(model, cfg.trainable)
    except ValueError as e:
        raise UserError(f"--trainable {cfg.trainable}: {e}") from None
    model = model.to(device)
    log(f"trainable parameters: {trainable:,} of {total:,}")
    prefix = FrozenPrefix(model, start, resolve_prefix_dtype(cfg.prefix_dtype, device), device)
    if start > 0:
        why = f" (auto: {describe_cpu()})" if cfg.prefix_dtype == "auto" and device.type == "cpu" else ""
        suffix = "under bfloat16 autocast" if device.type == "cuda" else "in float32"
        log(f"frozen prefix: {prefix.dtype}{why}; the trainable part computes {suffix}")
    return Classifier(model, tokenizer, name, cfg, start, prefix, trainable, total, load_seconds)


def tokenize(texts: dict, classifier: Classifier, world: World, log) -> Tokenized:
    """This process's share of each split, tokenized and truncated; the length policy said in one line."""
    cfg, context = classifier.cfg, classifier.model.cfg.context_length
    if cfg.max_length and cfg.max_length > context:
        log(f"--max-length {cfg.max_length} is beyond the model's context of {context} tokens: {context} are kept")
        classifier.cfg = cfg = replace(cfg, max_length=context)
    cap, out, max_length = min(context, DEFAULT_MAX_LENGTH), {}, None
    for split in SPLITS:
        split_texts, labels = texts[split]
        shard = world.shard(len(split_texts))
        out[split] = TextDataset([split_texts[i] for i in shard], [labels[i] for i in shard], classifier.tokenizer,
                                 cfg.max_length if split == "train" else max_length, cap, cfg.truncation,
                                 cfg.chunking)
        if split == "train":  # the longest training example over every process's share
            max_length = out["train"].max_length = all_max(out["train"].max_length)
    counts = all_reduce_sum(torch.tensor([[ds.cut, ds.dropped, len(texts[s][0]), ds.windows]
                                          for s, ds in out.items()])).tolist()
    why = "--max-length" if cfg.max_length else \
        f"the default cap of {cap} tokens; --max-length to change it" if max_length == cap else \
        f"the longest training text, within the default cap of {cap}"
    if cfg.chunking:
        chunking = cfg.chunking
        overlap = chunking.overlap_for(max_length, len(classifier.tokenizer.prefix))
        split = ", ".join(f"{s} {n:,} texts in {w:,} windows ({c:,} cut, {d:,} tokens past {chunking.max_chunks} "
                          "windows dropped)" for s, (c, d, n, w) in zip(out, counts))
        log(f"length: windows of {max_length} tokens ({why}) overlapping by {overlap}, at most "
            f"{chunking.max_chunks} per text (--max-chunks); {split}")
    else:
        cuts = ", ".join(f"{s} {c:,} of {n:,} texts ({d:,} tokens dropped)" for s, (c, d, n, _) in zip(out, counts))
        log(f"length: {max_length} tokens ({why}); {cfg.truncation} truncation cuts {cuts}")
    return Tokenized(out, max_length, max_length if cfg.pad_to_fixed else None)


def make_loaders(inputs: Inputs, tokens: Tokenized, texts: dict, cfg: TrainConfig, world: World,
                 train_on: tuple[str, ...] = ("train",)) -> dict[str, ShardedLoader]:
    """Shuffled from the global RNG, seeded right before training, exactly as the book's loader is
    (--batch-order by-length: then batched by length, from every process's lengths). `train_on`:
    the splits the training loader goes over (tune's winner: the validation split too, and then
    there is no validation loader)."""
    n = {split: len(texts[split][0]) for split in SPLITS}
    sizes = [size for split in train_on for size in global_sizes(tokens.datasets[split], n[split], world)] \
        if cfg.batch_order == "by-length" else None
    data = inputs.sets["train"] if train_on == ("train",) else ConcatDataset([inputs.sets[s] for s in train_on])
    loaders = {"train": ShardedLoader(data, sum(n[s] for s in train_on), cfg.batch_size, inputs.collate, world,
                                      shuffle=True, drop_last=cfg.drop_last, sizes=sizes,
                                      parts=[n[s] for s in train_on])}
    if "validation" not in train_on:
        loaders["validation"] = ShardedLoader(inputs.sets["validation"], n["validation"], cfg.batch_size,
                                              inputs.collate, world)
    return loaders


def global_sizes(dataset: TextDataset, n: int, world: World) -> list[int]:
    """Every example's length in token positions, from this process's share and the others'."""
    sizes = torch.zeros(n, dtype=torch.long)
    sizes[list(world.shard(n))] = torch.tensor(dataset.sizes, dtype=torch.long)
    return all_reduce_sum(sizes).tolist()


def quiet(*args, **kwargs) -> None:
    """The log of every process but rank 0."""
