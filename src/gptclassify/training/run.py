"""Training, top to bottom: prepare (data, classifier, frozen pass, loaders) -> for each epoch, for
each batch, one step (forward, loss, backward, all-reduce when distributed, optimizer) -> evaluate
the epoch -> checkpoint -> final metrics -> write the run.

This is the book's `train_classifier_simple`, made resumable: a checkpoint after every epoch (and
within epochs, by time or `--checkpoint-every`) holds the trainable weights, the optimizer, the RNG
and, mid-epoch, the epoch's data order, so that `--resume` ends bit for bit where an uninterrupted
run would. Under torchrun every process runs this loop on its share of each global batch, and the
summed gradients make every process take the single-process step.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..classifier.calibration import MIN_TEXTS_TO_CALIBRATE, calibrated, fit_temperatures
from ..classifier.lora import adapter_state, merge_lora
from ..classifier.metrics import SPLIT_BATCH_SIZE, logits_report, split_logits
from ..classifier.names import head_size
from ..classifier.tasks import headline, loss_fn, multi_label_report
from ..classifier.thresholds import choose_thresholds, described
from ..config import TOKENIZERS, Policy, RunConfig, TrainConfig
from ..data.splits import SPLITS
from ..distributed import barrier, same_rng_everywhere, sum_gradients
from ..failpoints import failpoint
from ..files import read_json, save_safetensors
from ..rundir import write_run
from .checkpoint import load_trainable, restore_checkpoint, save_best, save_checkpoint
from .prepare import Prepared, prepare
from .steps import (TrainState, calc_accuracy_loader, calc_loss_batch, calc_loss_loader, class_weights,
                    evaluate_model, macro_f1, make_optimizer, share_of, smoothed)

CHECKPOINT_SECONDS = 600  # mid-epoch checkpoints, unless --checkpoint-every says otherwise

# Steps between reading the step losses back (for the progress bar and the history): reading one
# at every step would make the CPU wait for the GPU to finish it before preparing the next.
LOSS_READ_EVERY = 50


def train_run(model: str | None, weights: str | None, data_dir: Path, cfg: TrainConfig, run_dir: Path, *,
              resume: bool = False, log=print, tuning: dict | None = None, calibrate_on=None) -> dict:
    """A whole training run, from a data directory and a model to a finished run directory
    (`tuning`: how `gptclassify tune` chose its recipe, kept in its config.json; `calibrate_on`: its
    out-of-fold logits and targets, the held-out scores of every training and validation text: then
    the validation split trains too, and those scores stand in for it)."""
    train_on = ("train", "validation") if calibrate_on else ("train",)
    return train(prepare(model, weights, data_dir, cfg, run_dir, log, train_on=train_on), resume=resume,
                 tuning=tuning, calibrate_on=calibrate_on)


def train(p: Prepared, resume: bool = False, tuning: dict | None = None, calibrate_on=None) -> dict:
    """Train a prepared run (from its last checkpoint with `resume`), evaluate it and write it."""
    cfg, model, ckpt = p.cfg, p.model, p.run_dir / "checkpoint"
    steps = cfg.epochs * len(p.loaders["train"])
    optimizer, scheduler = make_optimizer(model, cfg, steps if cfg.max_steps is None else min(steps, cfg.max_steps))
    restored = restore_checkpoint(ckpt, model, optimizer, scheduler) if resume else None
    if restored is None:
        state, order = TrainState(), None
        torch.manual_seed(cfg.seed)  # as the book does right before training
    else:
        state, order = restored
        p.log("resuming " + (f"in epoch {state.epoch + 1} after step {state.global_step}" if order else
                             f"after epoch {state.epoch} (step {state.global_step})"))
    weight = class_weights(cfg, p.task, p.training_targets(), len(p.labels), p.device)  # all processes alike
    if weight is not None:
        p.log(f"{'positive' if p.task == 'multi-label' else 'class'} weights (balanced): "
              + ", ".join(f"{label} {w:.3f}" for label, w in zip(p.labels, weight)))
    state = fit(p, optimizer, scheduler, state, order, weight)
    barrier()  # rank 0's last checkpoint is on disk
    if cfg.keep_best and (ckpt / "best.safetensors").is_file():
        load_trainable(model, ckpt / "best.safetensors")
        p.log(f"kept the best epoch by validation {cfg.select_by}: {state.best_epoch}")
    model.eval()
    outputs = {split: full_logits(p, split) for split in SPLITS}  # each split's pass once
    if not p.held_out:  # the validation split trained: its held-out scores are tune's out-of-fold ones
        outputs["validation"] = calibrate_on
    source = f"{len(calibrate_on[1]):,} out-of-fold texts of tune's folds" if calibrate_on else "validation"
    temperature = calibrate(p, *outputs["validation"], source)
    thresholds, rule = label_thresholds(p, calibrated(outputs["validation"][0], temperature), outputs["validation"][1]) \
        if p.task == "multi-label" else (None, None)
    metrics = {split: logits_report(*outputs[split], p.labels, p.task, thresholds, p.target_scale,
                                    cfg.loss == "huber", temperature) for split in SPLITS}
    if rule:
        metrics["validation"]["threshold_rule"] = rule
    if not p.held_out:
        metrics["validation"]["scored"] = f"out of fold: {source}, each by the fold model that did not train on it"
    log_calibration(p, metrics["validation"], source)
    metrics["training"] = training_summary(p, state)
    failpoint("evaluation")
    if p.world.is_main:
        if cfg.trainable == "lora":  # the adapters kept apart, then folded in: a plain classifier is saved
            save_safetensors(adapter_state(model), p.run_dir / "adapter.safetensors", metadata=adapter_metadata(p))
            merge_lora(model)
        write_run(p.run_dir, model, p.classifier.tokenizer, run_config(p, thresholds, temperature, tuning),
                  state.history, metrics)
    barrier()  # nobody reports success before the run is written
    return metrics


def fit(p: Prepared, optimizer, scheduler, state: TrainState, order, class_weight) -> TrainState:
    """The epochs `state` has not done yet; `order`: the epoch's data order when resuming mid-epoch."""
    cfg, model, loader = p.cfg, p.model, p.loaders["train"]
    params = [q for q in model.parameters() if q.requires_grad]
    last_save = time.monotonic()
    while state.epoch < cfg.epochs and steps_left(state, cfg) and patience_left(state, cfg):
        model.train()
        if order is None:  # a new epoch: one data order for every process, whatever dropout drew
            same_rng_everywhere()
            order = loader.draw_order()
        tick, running = time.perf_counter(), None
        bar = tqdm(loader.batches(order, skip=state.step_in_epoch), total=len(order), initial=state.step_in_epoch,
                   desc=f"epoch {state.epoch + 1}/{cfg.epochs}", leave=False, disable=None if p.world.is_main else True)
        for batch, size in bar:
            optimizer.zero_grad()  # one step: forward, loss, backward, all-reduce, clip, update
            loss = None
            if batch is not None:  # this process's share of the global batch (none for a short last batch)
                loss = calc_loss_batch(batch, p.logits_fn, p.device, share_of(loader, size), class_weight,
                                       cfg.loss == "huber")
                loss.backward()
            state.pending.append(sum_gradients(params, loss))
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state.global_step, state.step_in_epoch, state.examples_seen = \
                state.global_step + 1, state.step_in_epoch + 1, state.examples_seen + size
            if len(state.pending) >= LOSS_READ_EVERY:
                running = smoothed(running, state.read_losses())
                bar.set_postfix(loss=f"{running:.4f}")
            if cfg.eval_freq and (state.global_step - 1) % cfg.eval_freq == 0:  # the book counts from -1
                estimate_losses(p, state)
            now = time.perf_counter()
            state.seconds, tick = state.seconds + now - tick, now
            if not steps_left(state, cfg):
                break
            if state.step_in_epoch < len(order) and checkpoint_due(cfg, state, last_save):
                save(p, optimizer, scheduler, state, order)
                last_save = time.monotonic()
            failpoint("step")
        state.read_losses()
        bar.close()
        state.epoch, state.step_in_epoch, order = state.epoch + 1, 0, None
        model.eval()
        if end_of_epoch(p, state) and cfg.keep_best and p.world.is_main:
            save_best(p.run_dir / "checkpoint", model)
        save(p, optimizer, scheduler, state)
        last_save = time.monotonic()
        if not patience_left(state, cfg) and state.epoch < cfg.epochs:
            p.log(f"early stopping: no better validation {cfg.select_by} for {cfg.early_stopping} epoch(s) "
                  f"after epoch {state.best_epoch}")
    return state


def steps_left(state: TrainState, cfg: TrainConfig) -> bool:
    return cfg.max_steps is None or state.global_step < cfg.max_steps


def patience_left(state: TrainState, cfg: TrainConfig) -> bool:
    """False once `cfg.early_stopping` epochs in a row have not improved on the best."""
    return not cfg.early_stopping or state.epoch - state.best_epoch < cfg.early_stopping


def checkpoint_due(cfg: TrainConfig, state: TrainState, last_save: float) -> bool:
    """Mid-epoch checkpoints: every --checkpoint-every steps, or every CHECKPOINT_SECONDS."""
    if cfg.checkpoint_every is None:
        return time.monotonic() - last_save > CHECKPOINT_SECONDS
    return cfg.checkpoint_every > 0 and state.global_step % cfg.checkpoint_every == 0


def save(p: Prepared, optimizer, scheduler, state: TrainState, order=None) -> None:
    if p.world.is_main:
        save_checkpoint(p.run_dir / "checkpoint", p.model, optimizer, scheduler, state, p.cfg, p.run_info(), order)


def estimate_losses(p: Prepared, state: TrainState) -> None:
    """The book's loss estimate on the first `eval_iter` batches of each split, into the history."""
    losses = evaluate_model(p.model, p.loaders["train"], p.loaders.get("validation"), p.logits_fn, p.device,
                            p.cfg.eval_iter, p.cfg.loss == "huber")
    state.history["eval"].append({"step": state.global_step, "examples_seen": state.examples_seen}
                                 | {k: v for k, v in zip(("train_loss", "val_loss"), losses) if v is not None})


def end_of_epoch(p: Prepared, state: TrainState) -> bool:
    """The epoch's accuracies and validation loss (whole splits, or the book's first batches) into the
    history and the log; whether this epoch is the best so far by `cfg.select_by`."""
    if not p.held_out:
        return end_of_epoch_all_trained(p, state)
    cfg, train_loader, val_loader = p.cfg, p.loaders["train"], p.loaders["validation"]
    if p.task != "single-label":
        return end_of_epoch_scored(p, state)
    if cfg.epoch_eval_iter is None:  # whole splits, read from the cache: no random draw
        logits, targets = full_logits(p, "train")
        train_acc = (logits.argmax(-1) == targets).sum().item() / len(targets)
        logits, targets = full_logits(p, "validation")
        val_loss = F.cross_entropy(logits, targets).item()  # per example, as in metrics.json
        val_acc = (logits.argmax(-1) == targets).float().mean().item()
    else:  # the book: accuracy on the first eval_iter batches of each loader
        train_acc = calc_accuracy_loader(train_loader, p.logits_fn, p.device, num_batches=cfg.epoch_eval_iter)
        val_acc = calc_accuracy_loader(val_loader, p.logits_fn, p.device, num_batches=cfg.epoch_eval_iter)
        with torch.random.fork_rng(devices=[]):  # an extra pass the book does not make: leave its RNG alone
            val_loss = calc_loss_loader(val_loader, p.logits_fn, p.device, num_batches=cfg.epoch_eval_iter)
            if cfg.select_by == "macro-f1":
                logits, targets = full_logits(p, "validation")
    epoch = {"epoch": state.epoch, "examples_seen": state.examples_seen, "train_accuracy": train_acc,
             "val_accuracy": val_acc, "val_loss": val_loss, "seconds": state.seconds}
    if cfg.select_by == "macro-f1":
        epoch["val_macro_f1"] = macro_f1(logits.argmax(-1), targets, logits.shape[-1])
    improved = record_epoch(state, cfg, epoch)
    p.log(f"epoch {state.epoch}: train accuracy {train_acc:.2%}, validation accuracy {val_acc:.2%}, "
          f"validation loss {val_loss:.4f}" + (f", validation macro-F1 {epoch['val_macro_f1']:.4f}"
                                               if "val_macro_f1" in epoch else "") + f" ({state.seconds:.1f}s)")
    return improved


def end_of_epoch_scored(p: Prepared, state: TrainState) -> bool:
    """`end_of_epoch` for label sets and numbers: the task's headline score (micro-F1, R²) on the
    whole train and validation splits, kept under the history's accuracy keys beside its name."""
    cfg, huber = p.cfg, p.cfg.loss == "huber"
    name, train_score = headline(p.task, *full_logits(p, "train"))
    logits, targets = full_logits(p, "validation")
    _, val_score = headline(p.task, logits, targets)
    val_loss = loss_fn(logits, targets, huber=huber).item()
    epoch = {"epoch": state.epoch, "examples_seen": state.examples_seen, "metric": name, "train_accuracy": train_score,
             "val_accuracy": val_score, "val_loss": val_loss, "seconds": state.seconds}
    if cfg.select_by == "macro-f1":
        epoch["val_macro_f1"] = multi_label_report(torch.sigmoid(logits), targets, p.labels, [0.5] * len(p.labels),
                                                   val_loss)["macro_f1"]
    improved = record_epoch(state, cfg, epoch)
    p.log(f"epoch {state.epoch}: train {name} {train_score:.4f}, validation {name} {val_score:.4f}, "
          f"validation loss {val_loss:.4f} ({state.seconds:.1f}s)")
    return improved


def end_of_epoch_all_trained(p: Prepared, state: TrainState) -> bool:
    """`end_of_epoch` when the validation split trains too (tune's winner): the headline score over
    every text that trains, and no epoch is the best (nothing is held out to say so)."""
    logits, targets = (torch.cat(pair) for pair in zip(full_logits(p, "train"), full_logits(p, "validation")))
    name, score = headline(p.task, logits, targets)
    state.history["epochs"].append({"epoch": state.epoch, "examples_seen": state.examples_seen, "metric": name,
                                    "train_accuracy": score, "seconds": state.seconds})
    p.log(f"epoch {state.epoch}: train {name} {score:.4f} (the training and validation splits; "
          f"tune's folds held the scores out) ({state.seconds:.1f}s)")
    return False


def record_epoch(state: TrainState, cfg: TrainConfig, epoch: dict) -> bool:
    """The epoch into the history; whether it is the best so far by `cfg.select_by` (kept in `state`)."""
    score = {"loss": -epoch["val_loss"], "accuracy": epoch["val_accuracy"],
             "macro-f1": epoch.get("val_macro_f1")}[cfg.select_by or "loss"]
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_val_loss, state.best_epoch, state.best_score = epoch["val_loss"], state.epoch, score
    state.history["epochs"].append(epoch)
    return improved


def calibrate(p: Prepared, logits: torch.Tensor, targets: torch.Tensor, source: str = "validation"):
    """The temperature(s) that make the scores probabilities (`calibration`), fitted on the validation
    split's logits, or on what `source` says they are (a tuned run: the winner's out-of-fold ones)."""
    if p.task == "regression":
        return None
    temperature = fit_temperatures(logits, targets, p.task)
    if temperature is None:
        p.log(f"calibration: none ({len(targets)} {source} texts; {MIN_TEXTS_TO_CALIBRATE} are needed)")
    return temperature


def log_calibration(p: Prepared, validation: dict, source: str) -> None:
    """The fitted temperature and what it did to the validation split's calibration error."""
    cal, temperature = validation.get("calibration"), validation.get("calibration", {}).get("temperature")
    if temperature is None:
        return
    shown = f"{temperature:.3f}" if isinstance(temperature, float) else \
        ", ".join(f"{label} {t:.2f}" for label, t in zip(p.labels, temperature))
    p.log(f"calibration: temperature {shown} (the NLL of {source}); "
          f"validation ECE {cal['ece_before']:.4f} -> {cal['ece']:.4f}, NLL {cal['nll_before']:.4f} -> {cal['nll']:.4f}")


def label_thresholds(p: Prepared, logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], dict]:
    """Each label's decision threshold, by the rule that cross-fitting on the validation split's
    outputs prefers (`thresholds.choose_thresholds`), and that choice."""
    thresholds, notes, rule = choose_thresholds(torch.sigmoid(logits), targets, p.labels)
    p.log(f"label thresholds: rule {described(rule)}: "
          + ", ".join(f"{label} {t:.3f}" for label, t in zip(p.labels, thresholds)))
    for note in notes:
        p.log(f"  {note}")
    return thresholds, rule


def full_logits(p: Prepared, split: str):
    """A whole split's logits and targets (every process's share, joined), in larger batches."""
    return split_logits(p.inputs.sets[split], p.tokens.datasets[split].sizes, max(p.cfg.batch_size, SPLIT_BATCH_SIZE),
                        p.inputs.collate, p.logits_fn, p.device, head_size(p.task, p.labels), len(p.texts[split][0]))


def training_summary(p: Prepared, state: TrainState) -> dict:
    return {"seconds": state.seconds, "examples_seen": state.examples_seen,
            "examples_per_second": state.examples_seen / state.seconds if state.seconds else None,
            "epochs": state.epoch, "steps": state.global_step, "best_epoch": state.best_epoch,
            "weights_load_seconds": p.classifier.load_seconds, "processes": p.world.size}


def adapter_metadata(p: Prepared) -> dict[str, str]:
    """What `lora.apply_adapter` needs besides the tensors, as safetensors metadata (strings)."""
    cfg = p.cfg
    blocks = len(p.model.trf_blocks) if cfg.lora_blocks is None else cfg.lora_blocks
    return {"format": "gptclassify-lora", "rank": str(cfg.lora_rank), "alpha": str(cfg.lora_alpha),
            "blocks": str(blocks), "head": cfg.lora_head, "model_name": p.classifier.model_name, "weights": p.weights}


def run_config(p: Prepared, thresholds: list[float] | None = None, temperature=None,
               tuning: dict | None = None) -> RunConfig:
    c = p.classifier
    chunking = c.cfg.chunking  # the windows as used, their overlap worked out
    windows = (chunking.max_chunks, chunking.overlap_for(p.tokens.max_length, len(c.tokenizer.prefix))) \
        if chunking else (None, None)
    policy = Policy(c.cfg.pooling, p.tokens.max_length, c.cfg.truncation, p.tokens.pad_to, c.tokenizer.pad_id,
                    c.prefix.dtype, c.start, *windows)
    tokenizer = TOKENIZERS[0] if c.tokenizer.name == "gpt2" else TOKENIZERS[1]
    data = {"dir": str(p.data_dir), "dataset": read_json(p.data_dir / "dataset.json")}
    return RunConfig(c.model_name, p.weights, p.model.cfg.to_dict(), p.labels, policy, dict(tokenizer), c.cfg, data,
                     c.trainable, c.total, p.inputs.cached, task=p.task, thresholds=thresholds,
                     target_scale=list(p.target_scale) if p.target_scale else None, temperature=temperature,
                     tuning=tuning)
