"""The training loop: the book's `train_classifier_simple` and its evaluators, made resumable.

The book's names are kept (`calc_loss_batch`, `calc_loss_loader`, `calc_accuracy_loader`,
`evaluate_model`) with one change: they take a `logits_fn` (token ids or cached hidden states in,
class logits out) instead of calling `model(x)[:, -1, :]`, so pooling and the feature cache live
in one place.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .classifier import POOLINGS, TRAINABLE, suffix_logits, valid_trainable
from .distributed import all_reduce_sum, current, same_rng_everywhere, sum_gradients
from .errors import UserError
from .failpoints import failpoint
from .prefix import PREFIX_DTYPES
from .tokenizer import TRUNCATIONS


SCHEDULES = ("constant", "linear", "cosine")
SELECT_BY = ("loss", "accuracy", "macro-f1")

# Tokens kept of each text unless --max-length says otherwise (texts shorter than this keep the
# book's rule: the longest training text). Chosen on long e-mails by validation accuracy
# (benchmarks/long_text.py, SpamAssassin with SmolLM2, head truncation): 94% at 128 tokens, 97% at
# 256, 94% at 512, whose frozen pass has 1.48x the positions of 256's.
DEFAULT_MAX_LENGTH = 256

# Which tokens of a longer text are kept unless --truncation says otherwise: the first and the last
# half of max_length. Chosen by 5-fold cross-validation on the 500 training-side SpamAssassin e-mails
# (benchmarks/recipe_cv.py): head+tail 95.40% against head's 92.80% at 256 tokens. The book's preset
# keeps the book's head.
DEFAULT_TRUNCATION = "head+tail"


MAX_COUNT = 2 ** 31 - 1  # the most of anything counted (epochs, steps, texts a batch): beyond, Python's C sizes overflow


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 8
    lr: float | None = None  # None: the model family's rate (FAMILY_DEFAULTS)
    weight_decay: float = 0.1
    seed: int = 123
    trainable: str = "last-block"  # head, last-block, last-N-blocks, all, or lora
    lora_rank: int = 16
    lora_alpha: float = 16.0  # scale alpha / rank, as peft (the book's LoRALayer setting: alpha = 16 * rank)
    lora_dropout: float = 0.0
    lora_blocks: int | None = None  # adapters in the last N blocks only (None: every block)
    lora_head: str = "adapter"  # adapter (the book's) or train (the head trained outright)
    pooling: str = "last-token"
    max_length: int | None = None  # None: the longest training example, within DEFAULT_MAX_LENGTH and the context
    truncation: str = DEFAULT_TRUNCATION  # which tokens of a longer text are kept: head, tail or head+tail
    pad_to_max: bool = False  # pad every batch to max_length, as the book does
    drop_last: bool = False
    eval_freq: int = 50  # steps between loss estimates (0: none)
    eval_iter: int | None = 5  # batches per loss estimate
    epoch_eval_iter: int | None = None  # batches for the epoch-end accuracy; None: the whole split
    grad_clip: float | None = None
    warmup_steps: int = 0
    lr_schedule: str | None = None  # after warmup: constant (the book), linear or cosine decay to zero; None: the family's
    max_steps: int | None = None
    device: str = "auto"
    cache: bool = True
    prefix_dtype: str = "auto"  # the frozen prefix's precision: auto, float32, bfloat16 or int8 (prefix.py)
    keep_best: bool = False  # keep the best epoch by `select_by` (loss when not given)
    select_by: str | None = None  # loss, accuracy or macro-f1 on validation; given, the best epoch is kept
    early_stopping: int | None = None  # stop after this many epochs without a better `select_by`
    class_weight: str | None = None  # balanced: each class's loss weighted by n / (classes * its count)
    checkpoint_every: int | None = None  # steps between mid-epoch checkpoints; 0: epoch ends only; None: by time
    recompute_blocks: bool = False  # keep each trained block's input only; recompute its inside for backward
    preset: str | None = None

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.trainable == "lora":
            if self.lora_rank < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
                raise UserError("--lora-rank must be 1 or more, --lora-alpha above 0, --lora-dropout in [0, 1)")
            if self.lora_blocks is not None and self.lora_blocks < 0:
                raise UserError("--lora-blocks must be 0 or more")
            if self.lora_head not in ("adapter", "train"):
                raise UserError("--lora-head must be adapter or train")
        elif not valid_trainable(self.trainable):
            raise UserError(f"--trainable must be one of {', '.join(TRAINABLE)}, lora (N a number), "
                            f"not {self.trainable!r}")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and not 0 < self.lr < math.inf):
            raise UserError("--epochs and --batch-size must be positive, and --lr above zero")
        self.check_numbers()
        if self.truncation not in TRUNCATIONS:
            raise UserError(f"--truncation must be one of {', '.join(TRUNCATIONS)}")
        if self.lr_schedule not in (*SCHEDULES, None):
            raise UserError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise UserError("--checkpoint-every must be 0 (epoch ends only) or a number of steps")
        if self.select_by not in (*SELECT_BY, None):
            raise UserError(f"--select-by must be one of {', '.join(SELECT_BY)}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise UserError("--early-stopping is a number of epochs (1 or more)")
        if self.class_weight not in ("balanced", None):
            raise UserError("--class-weight must be balanced (or not given)")
        if self.select_by or self.early_stopping:
            self.keep_best = True
        if self.keep_best and self.select_by is None:
            self.select_by = "loss"
        if self.prefix_dtype not in PREFIX_DTYPES:
            raise UserError(f"--prefix-dtype must be one of {', '.join(PREFIX_DTYPES)}")

    def check_numbers(self) -> None:
        """The counts and amounts that have a range, each refused in one line outside it."""
        finite = lambda v: v is None or math.isfinite(v)  # noqa: E731
        rules = [
            (finite(self.weight_decay) and self.weight_decay >= 0, "--weight-decay must be 0 or more"),
            (finite(self.lora_alpha) and finite(self.lora_dropout), "--lora-alpha and --lora-dropout must be numbers"),
            (self.max_length is None or self.max_length >= 1, "--max-length must be 1 or more"),
            (self.eval_freq >= 0, "--eval-freq must be 0 (no loss estimates) or a number of steps"),
            (self.eval_iter is None or self.eval_iter >= 1, "--eval-iter must be 1 or more batches"),
            (self.epoch_eval_iter is None or self.epoch_eval_iter >= 1, "epoch_eval_iter must be 1 or more batches"),
            (self.grad_clip is None or (finite(self.grad_clip) and self.grad_clip > 0), "--grad-clip must be above 0"),
            (self.warmup_steps >= 0, "--warmup-steps must be 0 or more"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be 1 or more"),
            (-2 ** 63 <= self.seed < 2 ** 64, "--seed must fit in 64 bits"),
        ]
        counts = ("epochs", "batch_size", "lora_rank", "lora_blocks", "max_length", "eval_freq", "eval_iter",
                  "epoch_eval_iter", "warmup_steps", "max_steps", "early_stopping", "checkpoint_every")
        rules += [(getattr(self, name) is None or getattr(self, name) <= MAX_COUNT,
                   f"--{name.replace('_', '-')} must be at most {MAX_COUNT:,}") for name in counts]
        for ok, message in rules:
            if not ok:
                raise UserError(message)

    @property
    def pad_to_fixed(self) -> bool:
        """`last-position` pooling reads the last padded position, so its width must be fixed."""
        return self.pad_to_max or self.pooling == "last-position"


# Everything the book's chapter 6 used.
PRESETS = {
    "book": dict(pad_to_max=True, pooling="last-position", drop_last=True, eval_freq=50, eval_iter=5,
                 epoch_eval_iter=5, lr=5e-5, lr_schedule="constant", prefix_dtype="float32", truncation="head"),
}

# The learning rate each model family trains with unless --lr / --lr-schedule say otherwise.
# GPT-2: the book's. The Llama family (SmolLM2): the best of ten recipes in repeated 5-fold
# cross-validation on the SMS training messages (benchmarks/lr_cv.py); the book's 5e-5 underfits it.
FAMILY_DEFAULTS = {
    "gpt2": dict(lr=5e-5, lr_schedule="constant"),
    "llama": dict(lr=8e-4, lr_schedule="cosine"),
}


def with_family_defaults(cfg: TrainConfig, family: str) -> TrainConfig:
    """`cfg` with the settings it leaves open (None) taken from the model family's defaults."""
    defaults = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["gpt2"])
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from a preset with explicit overrides on top (None means: not given)."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    names = {f.name for f in fields(TrainConfig)}
    if overrides.get("cache_dtype") and not overrides.get("prefix_dtype"):  # the option's old name
        overrides["prefix_dtype"] = overrides["cache_dtype"]
    given = {k: v for k, v in overrides.items() if v is not None and k in names}
    return TrainConfig(**{**PRESETS.get(preset or "", {}), **given, "preset": preset})


def make_logits_fn(model, start: int, pooling: str, cached: bool, autocast, prefix=None, recompute: bool = False):
    """A function from a batch's inputs (token ids, or cached states entering block `start`) and
    true lengths to class logits. The frozen prefix (`prefix.FrozenPrefix`, in its own precision)
    runs without gradients; with `recompute`, the trained blocks keep only their inputs for backward."""

    def logits_fn(inputs, lengths):
        with autocast():
            if cached:
                x = inputs
            elif start < 0:  # every layer trains, the embeddings too
                x = model.embed(inputs)
            else:
                x = prefix(inputs).float()
            return suffix_logits(model, x, lengths, start, pooling, recompute).float()

    return logits_fn


def calc_loss_batch(batch, logits_fn, device, divide_by: int | None = None, weight: torch.Tensor | None = None):
    """The batch's mean cross-entropy; under torchrun, with `divide_by` the global batch size,
    this process's share of the global batch's mean (the shares add up to it). With class weights,
    each example's loss is weighted by its class's weight and divided by the batch size."""
    inputs, targets, lengths = (t.to(device, non_blocking=True) for t in batch)
    logits = logits_fn(inputs, lengths)
    if divide_by is None and weight is None:
        return F.cross_entropy(logits, targets)
    summed = F.cross_entropy(logits, targets, weight=weight, reduction="sum")
    return summed / (divide_by or len(targets))


def balanced_class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """n / (classes * count of the class), as scikit-learn's `class_weight="balanced"`."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float()
    if (counts == 0).any():
        raise UserError("--class-weight balanced: a class has no training example")
    return len(labels) / (num_classes * counts)


def macro_f1(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = ((predicted == c) & (targets == c)).sum().item()
        fp = ((predicted == c) & (targets != c)).sum().item()
        fn = ((predicted != c) & (targets == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / num_classes


def patience_left(state, cfg: TrainConfig) -> bool:
    """False once `cfg.early_stopping` epochs in a row have not improved on the best."""
    return not cfg.early_stopping or state.epoch - state.best_epoch < cfg.early_stopping


def share_of(loader, global_size: int) -> int | None:
    """What a process divides its summed loss by: nothing alone (the plain mean), else the global batch."""
    return None if loader.world.size == 1 else global_size


def first_batches(loader, num_batches):
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    for i, item in enumerate(loader):
        if i >= num_batches:
            break
        yield item


def calc_loss_loader(loader, logits_fn, device, num_batches=None):
    """Mean loss over the first `num_batches` global batches of a `ShardedLoader`."""
    if len(loader) == 0:
        return float("nan")
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    total = torch.zeros(1, dtype=torch.float64)
    with torch.no_grad():
        for batch, size in first_batches(loader, num_batches):
            if batch is not None:
                total += calc_loss_batch(batch, logits_fn, device, share_of(loader, size)).item()
    return all_reduce_sum(total).item() / num_batches


def calc_accuracy_loader(loader, logits_fn, device, num_batches=None):
    counts = torch.zeros(2, dtype=torch.int64)  # correct, seen
    with torch.no_grad():
        for batch, _ in first_batches(loader, num_batches):
            if batch is not None:
                inputs, targets, lengths = batch
                predicted = logits_fn(inputs.to(device), lengths.to(device)).argmax(dim=-1)
                counts += torch.tensor([(predicted == targets.to(device)).sum().item(), predicted.shape[0]])
    correct, seen = all_reduce_sum(counts).tolist()
    return correct / seen if seen else float("nan")


def evaluate_model(model, train_loader, val_loader, logits_fn, device, eval_iter):
    model.eval()
    train_loss = calc_loss_loader(train_loader, logits_fn, device, num_batches=eval_iter)
    val_loss = calc_loss_loader(val_loader, logits_fn, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


@dataclass
class TrainState:
    """Where training stands; saved with every epoch checkpoint."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    step_in_epoch: int = 0  # steps of the current epoch done (a checkpoint taken mid-epoch)
    examples_seen: int = 0
    seconds: float = 0.0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_score: float | None = None  # the best epoch's validation score by `select_by` (higher is better)
    history: dict = field(default_factory=lambda: {"step_loss": [], "eval": [], "epochs": []})

    def __post_init__(self):
        self.pending: list[torch.Tensor] = []  # step losses not yet read back from the device (see `fit`)

    def read_losses(self) -> list[float]:
        """The pending step losses, read back in one go and added to the history."""
        if not self.pending:
            return []
        values = torch.cat(self.pending).tolist()
        self.pending.clear()
        self.history["step_loss"].extend(values)
        return values

    def to_dict(self):
        self.read_losses()
        return asdict(self)


# Steps between reading the step losses back (for the progress bar and the history): reading one
# at every step would make the CPU wait for the GPU to finish it before preparing the next.
LOSS_READ_EVERY = 50


def fit(model, loaders: dict, logits_fn, optimizer, scheduler, cfg: TrainConfig, state: TrainState, device,
        full_logits, on_epoch_end=None, on_step=None, order=None, log=print, class_weight=None) -> TrainState:
    """Train for the epochs `state` has not done yet; `on_epoch_end(state, improved)` and `on_step(state,
    order)` may save a checkpoint; `order`: the epoch's data order when resuming mid-epoch. `loaders` are
    `ShardedLoader`s: under torchrun every process runs this loop on its share of each global batch, and
    the summed gradients make every process take the single-process step."""
    train_loader = loaders["train"]
    params = [p for p in model.parameters() if p.requires_grad]
    steps_left = lambda: cfg.max_steps is None or state.global_step < cfg.max_steps  # noqa: E731
    while state.epoch < cfg.epochs and steps_left() and patience_left(state, cfg):
        model.train()
        if order is None:  # a new epoch: one data order for every process, whatever dropout drew
            same_rng_everywhere()
            order = train_loader.draw_order()
        tick = time.perf_counter()
        bar = tqdm(train_loader.batches(order, skip=state.step_in_epoch), total=len(order),
                   initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if current().is_main else True)
        running = None
        for batch, size in bar:
            optimizer.zero_grad()
            loss = None
            if batch is not None:
                loss = calc_loss_batch(batch, logits_fn, device, share_of(train_loader, size), class_weight)
                loss.backward()
            value = sum_gradients(params, loss)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state.global_step += 1
            state.step_in_epoch += 1
            state.examples_seen += size
            state.pending.append(value)
            if len(state.pending) >= LOSS_READ_EVERY:
                running = smoothed(running, state.read_losses())
                bar.set_postfix(loss=f"{running:.4f}")
            if cfg.eval_freq and (state.global_step - 1) % cfg.eval_freq == 0:  # the book counts from -1
                estimate_losses(model, loaders, logits_fn, device, cfg.eval_iter, state)
            now = time.perf_counter()
            state.seconds, tick = state.seconds + now - tick, now
            if not steps_left():
                break
            if on_step and state.step_in_epoch < len(order):
                on_step(state, order)
            failpoint("step")
        state.read_losses()
        bar.close()
        state.epoch += 1
        state.step_in_epoch, order = 0, None
        model.eval()
        improved = end_of_epoch(loaders, logits_fn, cfg, state, device, full_logits, log)
        if on_epoch_end:
            on_epoch_end(state, improved)
        if not patience_left(state, cfg) and state.epoch < cfg.epochs:
            log(f"early stopping: no better validation {cfg.select_by} for {cfg.early_stopping} epoch(s) "
                f"after epoch {state.best_epoch}")
    return state


def estimate_losses(model, loaders: dict, logits_fn, device, eval_iter, state: TrainState) -> None:
    """The book's loss estimate on the first `eval_iter` batches of each split, into the history."""
    train_loss, val_loss = evaluate_model(model, loaders["train"], loaders["validation"], logits_fn, device, eval_iter)
    state.history["eval"].append({"step": state.global_step, "examples_seen": state.examples_seen,
                                  "train_loss": train_loss, "val_loss": val_loss})


def end_of_epoch(loaders: dict, logits_fn, cfg: TrainConfig, state: TrainState, device, full_logits, log) -> bool:
    """The epoch's accuracies and validation loss (whole splits, or the book's first batches) into the
    history and the log; whether this epoch is the best so far by `cfg.select_by`."""
    train_loader, val_loader = loaders["train"], loaders["validation"]
    if cfg.epoch_eval_iter is None:
        # These evaluations once iterated two DataLoaders, and each iteration of a DataLoader draws
        # a seed from the global RNG. Draw the same two, so later epochs shuffle as they always did
        # and published results reproduce.
        torch.empty((), dtype=torch.int64).random_()
        torch.empty((), dtype=torch.int64).random_()
        logits, targets = full_logits("train")
        train_acc = (logits.argmax(-1) == targets).sum().item() / len(targets)
        logits, targets = full_logits("validation")
        val_loss = F.cross_entropy(logits, targets).item()  # per example, as in metrics.json
        val_acc = (logits.argmax(-1) == targets).float().mean().item()
    else:  # the book: accuracy on the first eval_iter batches of each loader
        train_acc = calc_accuracy_loader(train_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
        val_acc = calc_accuracy_loader(val_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
        with torch.random.fork_rng(devices=[]):  # an extra pass the book does not make: leave its RNG alone
            val_loss = calc_loss_loader(val_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
            if cfg.select_by == "macro-f1":
                logits, targets = full_logits("validation")
    epoch = {"epoch": state.epoch, "examples_seen": state.examples_seen, "train_accuracy": train_acc,
             "val_accuracy": val_acc, "val_loss": val_loss, "seconds": state.seconds}
    if cfg.select_by == "macro-f1":
        epoch["val_macro_f1"] = macro_f1(logits.argmax(-1), targets, logits.shape[-1])
    score = {"loss": -val_loss, "accuracy": val_acc, "macro-f1": epoch.get("val_macro_f1")}[cfg.select_by or "loss"]
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_val_loss, state.best_epoch, state.best_score = val_loss, state.epoch, score
    state.history["epochs"].append(epoch)
    log(f"epoch {state.epoch}: train accuracy {train_acc:.2%}, validation accuracy {val_acc:.2%}, "
        f"validation loss {val_loss:.4f}" + (f", validation macro-F1 {epoch['val_macro_f1']:.4f}"
                                             if "val_macro_f1" in epoch else "") + f" ({state.seconds:.1f}s)")
    return improved


def smoothed(running: float | None, values: list[float]) -> float:
    """An exponential moving average of the step losses, as the progress bar shows it."""
    for value in values:
        running = value if running is None else 0.9 * running + 0.1 * value
    return running


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The multiple of cfg.lr used by optimizer step `step` (from 0): a linear warmup over
    cfg.warmup_steps, then constant, or decaying to zero at `total_steps` (linear or cosine)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.lr_schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: TrainConfig, total_steps: int):
    """AdamW over the trainable parameters, and the learning-rate schedule for `total_steps` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates all parameters in one pass: the same AdamW, a fraction of the time.
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))
    return optimizer, scheduler
