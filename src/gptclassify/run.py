"""Running a training: from a data directory and a model to a finished run directory.

`Trainer` builds what the book builds, in its order (data, model, head, freezing, loaders), runs
the frozen prefix once over every example (the feature cache), trains, evaluates and writes the
run (`rundir.py`), with a checkpoint after every epoch (`checkpoint.py`). Under torchrun every
process runs this same code on its share of the examples (`distributed.py`); only rank 0 logs and
writes files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import __version__
from .batches import Collate, ShardedLoader, TextDataset
from .checkpoint import has_checkpoint, load_trainable, restore_checkpoint, save_best, save_checkpoint, save_start
from .classifier import add_classifier_head, first_trainable_block, freeze_all_but
from .data import SPLITS, dataset_labels, load_data_split
from .device import autocast_for, no_grad_batching, resolve_device
from .distributed import all_max, all_reduce_sum, barrier, current, launched
from .errors import UserError
from .evaluate import SPLIT_BATCH_SIZE, logits_report, split_logits
from . import feature_cache
from .failpoints import failpoint
from .features import (FeatureDataset, build_feature_store, cache_unavailable_reason, collate_features,
                       feature_widths, gpu_room_for, keep_on_gpu, store_from, where_features_live)
from .files import read_json, save_safetensors, write_failure
from .hub import sha256_file
from .lora import adapter_state, add_lora, merge_lora
from .prefix import FrozenPrefix, describe_cpu, resolve_prefix_dtype
from .progress import Progress
from .rundir import write_run
from .tokenizer import Tokenizer, get_tokenizer, load_tokenizer
from .train import (DEFAULT_MAX_LENGTH, TrainConfig, TrainState, balanced_class_weights, fit, make_logits_fn,
                    make_optimizer, with_family_defaults)
from .weights import load_pretrained


def base_model(model_name: str, weights: str):
    """The pretrained (or, with weights='random', randomly initialised) language model."""
    from .models.gpt2 import GPT2_CONFIGS, GPTModel, gpt2_config
    from .models.llama import LLAMA_CONFIGS, LlamaModel, llama_config

    architectures = [*GPT2_CONFIGS, *LLAMA_CONFIGS]
    if model_name.removesuffix("-instruct") not in architectures:
        raise UserError(f"unknown model {model_name!r} (known: {', '.join(architectures)})")
    if weights != "random":
        return load_pretrained(weights)
    torch.manual_seed(123)
    if model_name in GPT2_CONFIGS:
        return GPTModel(gpt2_config(model_name)).eval()
    return LlamaModel(llama_config(model_name)).eval()


def base_tokenizer(model_name: str, weights: str) -> Tokenizer:
    if weights == "random":
        if model_name.startswith("gpt2"):
            return get_tokenizer("gpt2")
        raise UserError("--weights random needs a GPT-2 model; Llama-family tokenizers come with their weights")
    return load_tokenizer(weights)


def load_data(data_dir: Path, labels: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """Every split's texts and label ids (each process reads them all and keeps its share's tokens)."""
    return {split: load_data_split(data_dir, split, labels) for split in SPLITS}


CHECKPOINT_SECONDS = 600  # mid-epoch checkpoints, unless --checkpoint-every says otherwise


class Trainer:
    """Everything one training run needs, built in the order the book builds it."""

    def __init__(self, model_name: str, weights: str, data_dir: Path, cfg: TrainConfig, run_dir: Path, log=print):
        self.world = current()
        self.run_dir, self.log = Path(run_dir), (log if self.world.is_main else quiet)
        self.model_name, self.weights, self.data_dir = model_name, weights, Path(data_dir)
        self.labels = dataset_labels(self.data_dir)
        self.texts = load_data(self.data_dir, self.labels)
        if len(self.texts["train"][0]) < self.world.size:
            raise UserError(f"{len(self.texts['train'][0])} training examples cannot be shared by {self.world.size} processes")
        self.device = resolve_device(cfg.device)
        self.autocast = autocast_for(self.device)
        started = time.perf_counter()
        model = base_model(model_name, weights)
        self.tokenizer = base_tokenizer(model_name, weights)
        self.load_seconds = time.perf_counter() - started
        self.cfg = cfg = with_family_defaults(cfg, model.cfg.family)  # the rate the model family trains with
        if cfg.trainable == "lora" and cfg.lora_rank > model.cfg.emb_dim:
            raise UserError(f"--lora-rank {cfg.lora_rank} is over the model's width ({model.cfg.emb_dim}): "
                            "an update of that rank is a full matrix")
        if self.world.is_main and not has_checkpoint(self.run_dir):  # from here on, a killed run can be resumed
            save_start(self.run_dir / "checkpoint", cfg, self.run_info())
        add_classifier_head(model, len(self.labels), seed=cfg.seed)
        n_layers = len(model.trf_blocks)
        try:
            if cfg.trainable == "lora":  # the adapters' A drawn right after the head, from the same seed
                lora_blocks = n_layers if cfg.lora_blocks is None else cfg.lora_blocks
                self.trainable, self.total = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                                                      lora_blocks, cfg.lora_head)
                self.start = n_layers - lora_blocks
            else:
                self.start = first_trainable_block(n_layers, cfg.trainable)
                self.trainable, self.total = freeze_all_but(model, cfg.trainable)
        except ValueError as e:
            raise UserError(f"--trainable {cfg.trainable}: {e}") from None
        self.model = model.to(self.device)
        self.log(f"trainable parameters: {self.trainable:,} of {self.total:,}")
        if launched():
            self.log(f"data parallel: {self.world.describe()}; each holds 1/{self.world.size} of the examples")
        self.prefix = FrozenPrefix(self.model, self.start, resolve_prefix_dtype(cfg.prefix_dtype, self.device), self.device)
        if self.start > 0:
            why = f" (auto: {describe_cpu()})" if cfg.prefix_dtype == "auto" and self.device.type == "cpu" else ""
            suffix = "under bfloat16 autocast" if self.device.type == "cuda" else "in float32"
            self.log(f"frozen prefix: {self.prefix.dtype}{why}; the trainable part computes {suffix}")
        self.datasets = self.make_datasets()
        self.cached = self.prepare_cache()
        self.loaders = self.make_loaders()
        self.logits_fn = make_logits_fn(self.model, self.start, cfg.pooling, self.cached, self.autocast, self.prefix,
                                        cfg.recompute_blocks)

    def make_datasets(self) -> dict[str, TextDataset]:
        """This process's share of each split (all of it, alone), tokenized and truncated."""
        context = self.model.cfg.context_length
        if self.cfg.max_length and self.cfg.max_length > context:
            self.log(f"--max-length {self.cfg.max_length} is beyond the model's context of {context} tokens: "
                     f"{context} are kept")
            self.cfg = replace(self.cfg, max_length=context)
        out = {}
        for split in SPLITS:
            texts, labels = self.texts[split]
            shard = self.world.shard(len(texts))
            out[split] = TextDataset([texts[i] for i in shard], [labels[i] for i in shard], self.tokenizer,
                                     self.cfg.max_length if split == "train" else self.max_length,
                                     min(self.model.cfg.context_length, DEFAULT_MAX_LENGTH), self.cfg.truncation)
            if split == "train":  # the longest training example over every process's share
                self.max_length = out["train"].max_length = all_max(out["train"].max_length)
        self.pad_to = self.max_length if self.cfg.pad_to_fixed else None
        counts = all_reduce_sum(torch.tensor([[ds.cut, ds.dropped, len(self.texts[s][0])] for s, ds in out.items()]))
        cap = min(self.model.cfg.context_length, DEFAULT_MAX_LENGTH)
        why = "--max-length" if self.cfg.max_length else \
            f"the default cap of {cap} tokens; --max-length to change it" if self.max_length == cap else \
            f"the longest training text, within the default cap of {cap}"
        cuts = ", ".join(f"{s} {c:,} of {n:,} texts ({d:,} tokens dropped)" for s, (c, d, n) in zip(out, counts.tolist()))
        self.log(f"length: {self.max_length} tokens ({why}); {self.cfg.truncation} truncation cuts {cuts}")
        return out

    def prepare_cache(self) -> bool:
        if not self.cfg.cache:
            self.log("feature cache: off (--no-cache)")
            return False
        reason = cache_unavailable_reason(self.model, self.cfg.trainable)
        if reason:
            self.log(f"feature cache: not used: {reason}")
            return False
        widths = {split: feature_widths(ds, self.pad_to, self.cfg.pooling) for split, ds in self.datasets.items()}
        counts = {split: sum(w) for split, w in widths.items()}
        mine = sum(counts.values())
        total = int(all_reduce_sum(torch.tensor([mine])).item())
        key, meta = self.cache_key(counts)
        entry, damaged = feature_cache.open_entry(key)
        if damaged:
            self.log(f"feature cache: entry {key[:12]} was damaged ({damaged}): removed, building it again")
        if entry is not None:
            stored = feature_cache.load_entry(entry, list(widths))
            self.features = {split: FeatureDataset(store_from(*stored[split]), ds) for split, ds in self.datasets.items()}
            self.log(f"feature cache: reusing {total:,} positions of entry {key[:12]} (made {entry.meta['created']}, "
                     f"{entry.nbytes / 1e9:.2f} GB): the frozen pass is skipped")
            self.features_to_gpu()
            return True
        nbytes, where = where_features_live(mine, self.model.cfg.emb_dim, self.prefix.out_dtype)
        writer, outputs, where = self.open_entry_writer(key, meta, widths, nbytes, where)
        each = " per process" if self.world.size > 1 else ""
        blocks = f"{self.start} frozen block{'s' if self.start != 1 else ''}"
        self.log(f"frozen pass: {total:,} token positions through the embedding and {blocks} in {self.prefix.dtype} "
                 f"({', '.join(f'{s} {n:,}' for s, n in counts.items())}{' on rank 0' if each else ''}); "
                 f"features {nbytes / 1e9:.2f} GB{each} {where}")
        progress = Progress(mine, "positions", "frozen pass", self.log, enabled=self.world.is_main)
        try:
            self.features = self.frozen_pass(widths, outputs, nbytes, progress)
        except BaseException:
            if writer:
                writer.abandon()
            raise
        seconds = progress.close()
        kept = writer is not None and self.publish_entry(writer, key)
        shared = f" (rank 0 holds {mine:,})" if self.world.size > 1 else ""
        self.log(f"feature cache: {total:,} positions through the frozen layers{shared} in {seconds:.1f}s"
                 + (f", kept as entry {key[:12]}" if kept else ""))
        return True

    def frozen_pass(self, widths: dict, outputs: dict, nbytes: int, progress) -> dict[str, FeatureDataset]:
        """Every split through the frozen prefix once. On a GPU with room for them, the states are
        written and kept there (training batches them there) and copied to the on-disk entry after."""
        texts_per_batch, tokens_per_batch = no_grad_batching(self.device, max(self.cfg.batch_size, 32))
        why_not = gpu_room_for(nbytes, self.device)
        self.log_where_features_are(why_not, "kept on the GPU")
        features = {}
        for split, ds in self.datasets.items():
            disk = outputs.get(split)
            flat = disk if why_not else torch.empty(sum(widths[split]), self.model.cfg.emb_dim,
                                                    dtype=self.prefix.out_dtype, device=self.device)
            store = build_feature_store(self.prefix, ds, pad_id=self.tokenizer.pad_id, pad_to=self.pad_to,
                                        pooling=self.cfg.pooling, batch_size=texts_per_batch,
                                        max_tokens=tokens_per_batch, device=self.device, progress=progress, flat=flat)
            if disk is not None and flat is not disk:
                disk.copy_(store.flat.cpu())  # the reusable entry on disk, in one copy
            features[split] = FeatureDataset(store, ds)
        return features

    def open_entry_writer(self, key: str, meta: dict, widths: dict, nbytes: int, where: str):
        """The on-disk entry the frozen pass writes into, its files made and their space reserved
        first; (None, {}, why not) when it is over the cache's limit or cannot be written."""
        limit = feature_cache.limit_bytes()
        if nbytes > limit:
            return None, {}, f"{where}, not kept: over the on-disk cache's limit of {limit / 1e9:.0f} GB"
        writer = None
        try:
            writer = feature_cache.EntryWriter(key, meta)
            dim, dtype = self.model.cfg.emb_dim, self.prefix.dtype_name
            outputs = {split: writer.features(split, w, dim, dtype) for split, w in widths.items()}
            return writer, outputs, f"on disk in {feature_cache.cache_root()} (reusable)"
        except OSError as e:
            if writer:
                writer.abandon()
            return None, {}, f"{where}, not kept on disk ({e.filename or feature_cache.cache_root()}: {write_failure(e)})"

    def publish_entry(self, writer, key: str) -> bool:
        """Checksum the finished entry and put it in place, then keep the cache to its limit."""
        try:
            writer.finish()
        except (OSError, UserError) as e:  # the run goes on with its features; later runs compute them again
            writer.abandon()
            self.log(f"feature cache: could not keep the features on disk ({getattr(e, 'strerror', None) or e})")
            return False
        for old in feature_cache.prune(keep=key):
            self.log(f"feature cache: removed entry {old.key[:12]} ({old.nbytes / 1e9:.2f} GB, least recently used)")
        return True

    def cache_key(self, positions: dict[str, int]) -> tuple[str, dict]:
        """The on-disk cache's key (everything the features depend on) and what `cache list` shows."""
        named = [(n, t) for n, t in self.model.state_dict().items()
                 if not n.startswith(("trf_blocks.", "final_norm.", "out_head."))
                 or (n.startswith("trf_blocks.") and int(n.split(".")[1]) < self.start)]
        parts = {
            "weights_sha256": feature_cache.hash_tensors(named),
            "model": self.model.cfg.to_dict(),
            "tokens_sha256": {s: feature_cache.hash_token_ids(ds.encoded) for s, ds in self.datasets.items()},
            "pad_id": self.tokenizer.pad_id, "pad_to": self.pad_to, "pooling_width": self.cfg.pooling == "last-position",
            "first_trainable_block": self.start, "prefix_dtype": self.prefix.dtype,
            "share": [self.world.rank, self.world.size], "torch": torch.__version__, "device": self.device.type,
        }
        meta = {"model": self.model_name, "weights": self.weights, "data": str(self.data_dir.resolve()),
                "data_sha256": {s: sha256_file(self.data_dir / f"{s}.csv") for s in SPLITS
                                if (self.data_dir / f"{s}.csv").is_file()},
                "max_length": self.max_length, "truncation": self.cfg.truncation, "first_trainable_block": self.start,
                "prefix_dtype": self.prefix.dtype, "dtype": self.prefix.dtype_name, "dim": self.model.cfg.emb_dim,
                "positions": positions,
                "share": parts["share"]}
        return feature_cache.entry_key(parts), meta

    def features_to_gpu(self) -> None:
        """On a GPU, states read from the on-disk cache go there when they fit: batches are then made there."""
        self.log_where_features_are(keep_on_gpu(self.features, self.device), "copied to the GPU")

    def log_where_features_are(self, why_not_on_gpu: str | None, on_gpu: str) -> None:
        """On a GPU, whether the cached states are there or, and why, in host memory (elsewhere: nothing)."""
        if self.device.type == "cuda":
            self.log("feature cache: " + (f"kept in host memory ({why_not_on_gpu})" if why_not_on_gpu else on_gpu))

    def inputs(self):
        """What the suffix reads, per split (cached states or token ids), and how to batch it."""
        if self.cached:
            return self.features, collate_features
        return self.datasets, Collate(self.tokenizer.pad_id, self.pad_to)

    def make_loaders(self) -> dict[str, ShardedLoader]:
        sets, collate = self.inputs()
        bs = self.cfg.batch_size
        n = {split: len(self.texts[split][0]) for split in SPLITS}
        # Shuffled from the global RNG, seeded right before training, exactly as the book's loader is.
        return {
            "train": ShardedLoader(sets["train"], n["train"], bs, collate, self.world, shuffle=True,
                                   drop_last=self.cfg.drop_last),
            "validation": ShardedLoader(sets["validation"], n["validation"], bs, collate, self.world),
        }

    def full_logits(self, split: str):
        """A whole split's logits and targets (every process's share, joined), in larger batches."""
        sets, collate = self.inputs()
        lengths = [len(e) for e in self.datasets[split].encoded]
        return split_logits(sets[split], lengths, max(self.cfg.batch_size, SPLIT_BATCH_SIZE), collate, self.logits_fn, self.device,
                            len(self.labels), len(self.texts[split][0]))

    def total_steps(self) -> int:
        """Optimizer steps in the whole run, where a decaying learning rate reaches zero."""
        steps = self.cfg.epochs * len(self.loaders["train"])
        return steps if self.cfg.max_steps is None else min(steps, self.cfg.max_steps)

    # -------------------------------------------------------------- the run

    def run(self, resume: bool = False, on_epoch_end=None) -> dict:
        ckpt, cfg, main = self.run_dir / "checkpoint", self.cfg, self.world.is_main
        optimizer, scheduler = make_optimizer(self.model, cfg, self.total_steps())
        restored = restore_checkpoint(ckpt, self.model, optimizer, scheduler) if resume else None
        if restored is None:
            state, order = TrainState(), None
            torch.manual_seed(cfg.seed)  # as the book does right before training
        else:
            state, order = restored
            where = f"in epoch {state.epoch + 1} after step {state.global_step}" if order else \
                f"after epoch {state.epoch} (step {state.global_step})"
            self.log(f"resuming {where}")
        last_save = time.monotonic()

        def save(st, order=None):
            nonlocal last_save
            if main:
                save_checkpoint(ckpt, self.model, optimizer, scheduler, st, cfg, self.run_info(), order)
            last_save = time.monotonic()

        def step_end(st, order):  # mid-epoch checkpoints: every --checkpoint-every steps, or by time
            every = cfg.checkpoint_every
            if every is None:
                due = time.monotonic() - last_save > CHECKPOINT_SECONDS
            else:
                due = every > 0 and st.global_step % every == 0
            if due:
                save(st, order)

        def epoch_end(st, improved):
            if improved and cfg.keep_best and main:
                save_best(ckpt, self.model)
            save(st)
            if on_epoch_end:
                on_epoch_end(st)

        weight = None
        if cfg.class_weight == "balanced":  # from every training label, the same on every process
            weight = balanced_class_weights(self.texts["train"][1], len(self.labels)).to(self.device)
            self.log("class weights (balanced): " + ", ".join(f"{label} {w:.3f}" for label, w in zip(self.labels, weight)))
        state = fit(self.model, self.loaders, self.logits_fn, optimizer, scheduler, cfg, state, self.device,
                    self.full_logits, on_epoch_end=epoch_end, on_step=step_end, order=order, log=self.log,
                    class_weight=weight)
        barrier()  # rank 0's last checkpoint is on disk
        if cfg.keep_best and (ckpt / "best.safetensors").is_file():
            load_trainable(self.model, ckpt / "best.safetensors")
            self.log(f"kept the best epoch by validation {cfg.select_by}: {state.best_epoch}")
        metrics = self.evaluate_all(state)
        failpoint("evaluation")
        if main:
            if cfg.trainable == "lora":  # the adapters kept apart, then folded in: a plain classifier is saved
                save_safetensors(adapter_state(self.model), self.run_dir / "adapter.safetensors",
                                 metadata=self.adapter_metadata())
                merge_lora(self.model)
            write_run(self.run_dir, self.model, self.tokenizer, self.run_config(), state.history, metrics)
        barrier()  # nobody reports success before the run is written
        return metrics

    def adapter_metadata(self) -> dict[str, str]:
        """What `lora.apply_adapter` needs besides the tensors, as safetensors metadata (strings)."""
        cfg = self.cfg
        blocks = len(self.model.trf_blocks) if cfg.lora_blocks is None else cfg.lora_blocks
        return {"format": "gptclassify-lora", "rank": str(cfg.lora_rank), "alpha": str(cfg.lora_alpha),
                "blocks": str(blocks), "head": cfg.lora_head, "model_name": self.model_name, "weights": self.weights}

    def run_info(self) -> dict:
        return {"model_name": self.model_name, "weights": self.weights, "data": str(self.data_dir)}

    def evaluate_all(self, state: TrainState) -> dict:
        self.model.eval()
        metrics = {split: logits_report(*self.full_logits(split), self.labels) for split in SPLITS}
        examples = state.examples_seen
        metrics["training"] = {
            "seconds": state.seconds, "examples_seen": examples,
            "examples_per_second": examples / state.seconds if state.seconds else None,
            "epochs": state.epoch, "steps": state.global_step, "best_epoch": state.best_epoch,
            "weights_load_seconds": self.load_seconds, "processes": self.world.size,
        }
        return metrics

    def run_config(self) -> dict:
        tok = {"kind": "tiktoken", "name": "gpt2"} if self.tokenizer.name == "gpt2" else \
            {"kind": "tokenizers", "file": "tokenizer.json"}
        return {
            "gptclassify_version": __version__,
            "model_name": self.model_name,
            "weights": self.weights,
            "model": self.model.cfg.to_dict(),
            "num_classes": len(self.labels),
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "label2id": {label: i for i, label in enumerate(self.labels)},
            "pooling": self.cfg.pooling,
            "max_length": self.max_length,
            "truncation": self.cfg.truncation,
            "pad_to": self.pad_to,
            "pad_id": self.tokenizer.pad_id,
            "prefix_dtype": self.prefix.dtype,
            "first_trainable_block": self.start,
            "tokenizer": tok,
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "training": asdict(self.cfg),
            "data": {"dir": str(self.data_dir), "dataset": read_json(self.data_dir / "dataset.json")},
            "feature_cache": self.cached,
        }


def quiet(*args, **kwargs) -> None:
    """The log of every process but rank 0."""
