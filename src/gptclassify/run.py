"""A training run from data directory to self-describing run directory, and back.

RUN/ holds `model.safetensors` (the whole classifier), `config.json` (architecture, labels,
pooling, max_length, tokenizer, every training setting), `metrics.json`, `history.json`,
`loss.png`, `accuracy.png`, the tokenizer file for non-GPT-2 models, and `checkpoint/`
(trainable weights, optimizer and RNG states after the last finished epoch) for `--resume`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from . import __version__
from .batches import Collate, TextDataset, length_sorted_loader
from .classifier import add_classifier_head, first_trainable_block, freeze_all_but
from .data import dataset_labels, read_split
from .errors import UserError
from .features import FeatureDataset, build_feature_store, cache_unavailable_reason, collate_features
from .files import atomic_path, read_json, write_json
from .metrics import classification_report
from .tokenizer import Tokenizer, get_tokenizer, load_tokenizer, tokenizer_from_json
from .train import (TrainConfig, TrainState, autocast_for, collect_logits, fit, make_logits_fn,
                    make_optimizer, resolve_device, with_family_defaults)
from .weights import assign_checked, load_pretrained, model_from_config_dict

SPLITS = ("train", "validation", "test")


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
    return {split: load_data_split(data_dir, split, labels) for split in SPLITS}


class Trainer:
    """Everything one training run needs, built in the order the book builds it."""

    def __init__(self, model_name: str, weights: str, data_dir: Path, cfg: TrainConfig, run_dir: Path, log=print):
        self.run_dir, self.log = Path(run_dir), log
        self.model_name, self.weights, self.data_dir = model_name, weights, Path(data_dir)
        self.labels = dataset_labels(self.data_dir)
        self.texts = load_data(self.data_dir, self.labels)
        self.device = resolve_device(cfg.device)
        self.autocast = autocast_for(self.device)
        started = time.perf_counter()
        model = base_model(model_name, weights)
        self.tokenizer = base_tokenizer(model_name, weights)
        self.load_seconds = time.perf_counter() - started
        self.cfg = cfg = with_family_defaults(cfg, model.cfg.family)  # the rate the model family trains with
        add_classifier_head(model, len(self.labels), seed=cfg.seed)
        self.trainable, self.total = freeze_all_but(model, cfg.trainable)
        self.model = model.to(self.device)
        log(f"trainable parameters: {self.trainable:,} of {self.total:,}")
        self.start = first_trainable_block(len(model.trf_blocks), cfg.trainable)
        self.datasets = self.make_datasets()
        self.cached = self.prepare_cache()
        self.loaders = self.make_loaders()
        self.logits_fn = make_logits_fn(self.model, self.start, cfg.pooling, self.cached, self.autocast)

    def make_datasets(self) -> dict[str, TextDataset]:
        train_texts, train_labels = self.texts["train"]
        context = self.model.cfg.context_length
        train = TextDataset(train_texts, train_labels, self.tokenizer, self.cfg.max_length, context)
        self.max_length = train.max_length
        self.pad_to = self.max_length if self.cfg.pad_to_fixed else None
        out = {"train": train}
        for split in ("validation", "test"):
            out[split] = TextDataset(*self.texts[split], self.tokenizer, self.max_length)
        return out

    def prepare_cache(self) -> bool:
        if not self.cfg.cache:
            self.log("feature cache: off (--no-cache)")
            return False
        reason = cache_unavailable_reason(self.model, self.cfg.trainable)
        if reason:
            self.log(f"feature cache: not used: {reason}")
            return False
        started = time.perf_counter()
        dtype, autocast = torch.float32, self.autocast
        if self.cfg.cache_dtype == "bfloat16":  # half the memory, and bf16 matrix units where the CPU has them
            dtype, autocast = torch.bfloat16, lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        self.features = {
            split: FeatureDataset(build_feature_store(
                self.model, ds, self.start, pad_id=self.tokenizer.pad_id, pad_to=self.pad_to, pooling=self.cfg.pooling,
                batch_size=max(self.cfg.batch_size, 32), device=self.device, dtype=dtype, autocast=autocast), ds)
            for split, ds in self.datasets.items()
        }
        positions = sum(f.store.flat.shape[0] for f in self.features.values())
        self.log(f"feature cache: {positions:,} positions through the frozen layers in "
                 f"{time.perf_counter() - started:.1f}s")
        return True

    def make_loaders(self) -> dict[str, DataLoader]:
        bs = self.cfg.batch_size
        if self.cached:
            sets, collate = self.features, collate_features
        else:
            sets, collate = self.datasets, Collate(self.tokenizer.pad_id, self.pad_to)
        # Shuffled from the global RNG, seeded right before training, exactly as the book's loader is.
        loaders = {
            "train": DataLoader(sets["train"], batch_size=bs, shuffle=True, drop_last=self.cfg.drop_last,
                                collate_fn=collate),
            "validation": DataLoader(sets["validation"], batch_size=bs, shuffle=False, collate_fn=collate),
        }
        for split in SPLITS:  # full-set evaluation: grouped by length, in larger batches
            lengths = [len(e) for e in self.datasets[split].encoded]
            loaders[f"{split}_eval"] = length_sorted_loader(sets[split], lengths, max(bs, 64), collate)
        return loaders

    def total_steps(self) -> int:
        """Optimizer steps in the whole run, where a decaying learning rate reaches zero."""
        steps = self.cfg.epochs * len(self.loaders["train"])
        return steps if self.cfg.max_steps is None else min(steps, self.cfg.max_steps)

    # -------------------------------------------------------------- checkpoints for --resume

    def save_checkpoint(self, state: TrainState, optimizer, scheduler, improved: bool) -> None:
        ckpt = self.run_dir / "checkpoint"
        trainable = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        atomic_save(trainable, ckpt / "trainable.safetensors")
        if improved and self.cfg.keep_best:
            atomic_save(trainable, ckpt / "best.safetensors")
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
        opt_tensors["rng.torch"] = torch.get_rng_state()
        atomic_save(opt_tensors, ckpt / "optimizer.safetensors")
        write_json(ckpt / "state.json", {
            "run": {"model_name": self.model_name, "weights": self.weights, "data": str(self.data_dir)},
            "train_state": state.to_dict(), "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
            "train_config": asdict(self.cfg)})

    def load_trainable(self, path: Path) -> None:
        """Copy saved trainable weights (an epoch checkpoint or the best epoch) into the model."""
        saved = safe_load(path)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.requires_grad:
                    if name not in saved:
                        raise UserError(f"{path}: lacks {name!r} (made with another --trainable?)")
                    p.copy_(saved[name])

    def restore_checkpoint(self, optimizer, scheduler) -> TrainState:
        ckpt = self.run_dir / "checkpoint"
        meta = read_json(ckpt / "state.json")
        self.load_trainable(ckpt / "trainable.safetensors")
        tensors = safe_load(ckpt / "optimizer.safetensors")
        torch.set_rng_state(tensors.pop("rng.torch"))
        optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        scheduler.load_state_dict(meta["scheduler"])
        return TrainState(**meta["train_state"])

    # -------------------------------------------------------------- the run

    def run(self, resume: bool = False, on_epoch_end=None) -> dict:
        optimizer, scheduler = make_optimizer(self.model, self.cfg, self.total_steps())
        state = self.restore_checkpoint(optimizer, scheduler) if resume else TrainState()
        if resume:
            self.log(f"resuming after epoch {state.epoch} (step {state.global_step})")
        if not resume:
            torch.manual_seed(self.cfg.seed)  # as the book does right before training

        def epoch_end(st, improved):
            self.save_checkpoint(st, optimizer, scheduler, improved)
            if on_epoch_end:
                on_epoch_end(st)

        state = fit(self.model, self.loaders, self.logits_fn, optimizer, scheduler, self.cfg, state, self.device,
                    on_epoch_end=epoch_end, log=self.log)
        if self.cfg.keep_best and (self.run_dir / "checkpoint" / "best.safetensors").is_file():
            self.load_trainable(self.run_dir / "checkpoint" / "best.safetensors")
            self.log(f"kept the best epoch by validation loss: {state.best_epoch}")
        metrics = self.evaluate_all(state)
        self.save_run(state, metrics)
        return metrics

    def evaluate_all(self, state: TrainState) -> dict:
        self.model.eval()
        metrics = {}
        for split in SPLITS:
            metrics[split] = loader_report(self.loaders[f"{split}_eval"], self.logits_fn, self.device, self.labels)
        examples = state.examples_seen
        metrics["training"] = {
            "seconds": state.seconds, "examples_seen": examples,
            "examples_per_second": examples / state.seconds if state.seconds else None,
            "epochs": state.epoch, "steps": state.global_step, "best_epoch": state.best_epoch,
            "weights_load_seconds": self.load_seconds,
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
            "pad_to": self.pad_to,
            "pad_id": self.tokenizer.pad_id,
            "tokenizer": tok,
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "training": asdict(self.cfg),
            "data": {"dir": str(self.data_dir), "dataset": read_json(self.data_dir / "dataset.json")},
            "feature_cache": self.cached,
        }

    def save_run(self, state: TrainState, metrics: dict) -> None:
        from .plots import plot_history

        state_dict = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_save(state_dict, self.run_dir / "model.safetensors")
        if self.tokenizer.name != "gpt2":
            with atomic_path(self.run_dir / "tokenizer.json") as tmp:
                self.tokenizer.hf.save(str(tmp))
        write_json(self.run_dir / "config.json", self.run_config())
        write_json(self.run_dir / "history.json", state.history)
        write_json(self.run_dir / "metrics.json", metrics)
        plot_history(state.history, self.run_dir)


def atomic_save(tensors: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def safe_load(path: Path) -> dict:
    from safetensors import SafetensorError

    if not Path(path).is_file():
        raise UserError(f"{path}: not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: corrupt or unreadable ({str(e).splitlines()[0][:100]})") from None


def flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """An optimizer state dict as safetensors tensors plus JSON (no pickle)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def check_run_dir_free(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to train into a directory that already holds a run, unless told to replace it."""
    taken = [name for name in ("model.safetensors", "config.json", "checkpoint") if (Path(run_dir) / name).exists()]
    if taken and not overwrite:
        raise UserError(f"{run_dir} already holds a run ({taken[0]}); continue it with --resume, "
                        "or replace it with --overwrite")


def resume_settings(run_dir: Path) -> tuple[str, str, Path, TrainConfig]:
    """Model, weights, data and training settings of an interrupted run."""
    path = Path(run_dir) / "checkpoint" / "state.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoint to resume from (expected {path})")
    saved = read_json(path)
    try:
        run = saved["run"]
        settings = {"lr_schedule": "constant", **saved["train_config"]}  # checkpoints from before schedules
        return run["model_name"], run["weights"], Path(run["data"]), TrainConfig(**settings)
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not a gptclassify checkpoint ({e})") from None


# ------------------------------------------------------------------ loading a finished run


def read_run_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir}: not a gptclassify run (needs config.json and model.safetensors)")
    config = read_json(run_dir / "config.json")
    for key in ("model", "id2label", "pooling", "max_length", "tokenizer", "pad_id"):
        if key not in config:
            raise UserError(f"{run_dir}/config.json: missing {key!r}; not a gptclassify run config")
    return config


def load_run(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """The classifier, its tokenizer and its config, from safetensors and JSON only."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    with torch.device("meta"):
        model = model_from_config_dict(config["model"])
        model.out_head = nn.Linear(model.cfg.emb_dim, len(config["id2label"]))
    assign_checked(model, safe_load(run_dir / "model.safetensors"), f"{run_dir}/model.safetensors")
    tok = config["tokenizer"]
    if tok["kind"] == "tiktoken":
        tokenizer = get_tokenizer(tok["name"])
    else:
        tokenizer = tokenizer_from_json(run_dir / tok["file"], pad_id=config["pad_id"])
    return model.eval().to(resolve_device(device)), tokenizer, config


def evaluate_run(run_dir: Path, data_dir: Path, split: str = "test", device: str = "cpu", batch_size: int = 32) -> dict:
    """Metrics of a saved classifier on one split of a prepared data directory."""
    from .classifier import classify_logits

    model, tokenizer, config = load_run(run_dir, device)
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}")
    texts, targets = load_data_split(data_dir, split, labels)
    ds = TextDataset(texts, targets, tokenizer, config["max_length"])
    loader = length_sorted_loader(ds, [len(e) for e in ds.encoded], batch_size, Collate(tokenizer.pad_id, config.get("pad_to")))
    dev = resolve_device(device)
    logits_fn = lambda ids, lengths: classify_logits(model, ids, lengths, config["pooling"]).float()  # noqa: E731
    with torch.inference_mode():
        return loader_report(loader, logits_fn, dev, labels)


def loader_report(loader, logits_fn, device, labels: list[str]) -> dict:
    """Full-set metrics (loss per example, accuracy, per-class, confusion) of one loader."""
    logits, targets = collect_logits(loader, logits_fn, device)
    loss = torch.nn.functional.cross_entropy(logits, targets).item()
    return classification_report(targets.numpy(), logits.argmax(-1).numpy(), labels, loss)


def load_data_split(data_dir: Path, split: str, labels: list[str]):
    df = read_split(data_dir, split)
    label2id = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(df["label"]) - set(label2id))
    if unknown:
        raise UserError(f"{data_dir}/{split}.csv: label {unknown[0]!r} is not among the model's labels ({', '.join(labels)})")
    return df["text"].tolist(), [label2id[label] for label in df["label"]]
