"""The training loop: the book's `train_classifier_simple` and its evaluators, made resumable.

The book's names are kept (`calc_loss_batch`, `calc_loss_loader`, `calc_accuracy_loader`,
`evaluate_model`) with one change: they take a `logits_fn` (token ids or cached hidden states in,
class logits out) instead of calling `model(x)[:, -1, :]`, so pooling and the feature cache live
in one place.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .classifier import POOLINGS, TRAINABLE, prefix_states, suffix_logits
from .errors import UserError


SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 8
    lr: float | None = None  # None: the model family's rate (FAMILY_DEFAULTS)
    weight_decay: float = 0.1
    seed: int = 123
    trainable: str = "last-block"
    pooling: str = "last-token"
    max_length: int | None = None  # None: the longest training example, capped by the context
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
    cache_dtype: str = "float32"
    keep_best: bool = False
    preset: str | None = None

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.trainable not in TRAINABLE:
            raise UserError(f"--trainable must be one of {', '.join(TRAINABLE)}")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise UserError("--epochs and --batch-size must be positive, and --lr above zero")
        if self.lr_schedule not in (*SCHEDULES, None):
            raise UserError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}")
        if self.cache_dtype not in ("float32", "bfloat16"):
            raise UserError("--cache-dtype must be float32 or bfloat16")

    @property
    def pad_to_fixed(self) -> bool:
        """`last-position` pooling reads the last padded position, so its width must be fixed."""
        return self.pad_to_max or self.pooling == "last-position"


# Everything the book's chapter 6 used.
PRESETS = {
    "book": dict(pad_to_max=True, pooling="last-position", drop_last=True, eval_freq=50, eval_iter=5,
                 epoch_eval_iter=5, lr=5e-5, lr_schedule="constant"),
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
    given = {k: v for k, v in overrides.items() if v is not None and k in names}
    return TrainConfig(**{**PRESETS.get(preset or "", {}), **given, "preset": preset})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is available")
    return device


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_logits_fn(model, start: int, pooling: str, cached: bool, autocast):
    """A function from a batch's inputs (token ids, or cached states entering block `start`) and
    true lengths to class logits. The frozen prefix runs without gradients."""

    def logits_fn(inputs, lengths):
        with autocast():
            if cached:
                x = inputs
            elif start < 0:  # every layer trains, the embeddings too
                x = model.embed(inputs)
            else:
                with torch.no_grad():
                    x = prefix_states(model, inputs, start)
            return suffix_logits(model, x, lengths, start, pooling).float()

    return logits_fn


def calc_loss_batch(batch, logits_fn, device):
    inputs, targets, lengths = (t.to(device) for t in batch)
    return F.cross_entropy(logits_fn(inputs, lengths), targets)


def calc_loss_loader(loader, logits_fn, device, num_batches=None):
    if len(loader) == 0:
        return float("nan")
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    total = 0.0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= num_batches:
                break
            total += calc_loss_batch(batch, logits_fn, device).item()
    return total / num_batches


def calc_accuracy_loader(loader, logits_fn, device, num_batches=None):
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    correct = seen = 0
    with torch.no_grad():
        for i, (inputs, targets, lengths) in enumerate(loader):
            if i >= num_batches:
                break
            predicted = logits_fn(inputs.to(device), lengths.to(device)).argmax(dim=-1)
            seen += predicted.shape[0]
            correct += (predicted == targets.to(device)).sum().item()
    return correct / seen if seen else float("nan")


def evaluate_model(model, train_loader, val_loader, logits_fn, device, eval_iter):
    model.eval()
    train_loss = calc_loss_loader(train_loader, logits_fn, device, num_batches=eval_iter)
    val_loss = calc_loss_loader(val_loader, logits_fn, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def collect_logits(loader, logits_fn, device):
    """All logits and targets of a loader, for full-set metrics."""
    outs, targets = [], []
    with torch.no_grad():
        for inputs, target, lengths in loader:
            outs.append(logits_fn(inputs.to(device), lengths.to(device)).cpu())
            targets.append(target)
    return torch.cat(outs), torch.cat(targets)


@dataclass
class TrainState:
    """Where training stands; saved with every epoch checkpoint."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    examples_seen: int = 0
    seconds: float = 0.0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    history: dict = field(default_factory=lambda: {"step_loss": [], "eval": [], "epochs": []})

    def to_dict(self):
        return asdict(self)


def fit(model, loaders: dict, logits_fn, optimizer, scheduler, cfg: TrainConfig, state: TrainState, device,
        on_epoch_end=None, log=print) -> TrainState:
    """Train for the epochs `state` has not done yet; `on_epoch_end(state)` saves a checkpoint."""
    train_loader, val_loader = loaders["train"], loaders["validation"]
    steps_left = lambda: cfg.max_steps is None or state.global_step < cfg.max_steps  # noqa: E731
    while state.epoch < cfg.epochs and steps_left():
        model.train()
        started = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", leave=False, disable=None)
        running = None
        for batch in bar:
            optimizer.zero_grad()
            loss = calc_loss_batch(batch, logits_fn, device)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state.global_step += 1
            state.examples_seen += batch[0].shape[0]
            value = loss.item()
            state.history["step_loss"].append(value)
            running = value if running is None else 0.9 * running + 0.1 * value
            bar.set_postfix(loss=f"{running:.4f}")
            # The book counts steps from -1, so it evaluates after steps 1, 1 + eval_freq, ...
            if cfg.eval_freq and (state.global_step - 1) % cfg.eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, logits_fn, device, cfg.eval_iter)
                state.history["eval"].append({"step": state.global_step, "examples_seen": state.examples_seen,
                                              "train_loss": train_loss, "val_loss": val_loss})
            if not steps_left():
                break
        bar.close()
        state.seconds += time.perf_counter() - started
        state.epoch += 1
        model.eval()
        if cfg.epoch_eval_iter is None:
            train_acc = calc_accuracy_loader(loaders["train_eval"], logits_fn, device)
            logits, targets = collect_logits(loaders["validation_eval"], logits_fn, device)
            val_loss = F.cross_entropy(logits, targets).item()  # per example, as in metrics.json
            val_acc = (logits.argmax(-1) == targets).float().mean().item()
        else:  # the book: accuracy on the first eval_iter batches of each loader
            train_acc = calc_accuracy_loader(train_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
            val_acc = calc_accuracy_loader(val_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
            with torch.random.fork_rng(devices=[]):  # an extra pass the book does not make: leave its RNG alone
                val_loss = calc_loss_loader(val_loader, logits_fn, device, num_batches=cfg.epoch_eval_iter)
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch = val_loss, state.epoch
        state.history["epochs"].append({"epoch": state.epoch, "examples_seen": state.examples_seen,
                                        "train_accuracy": train_acc, "val_accuracy": val_acc, "val_loss": val_loss,
                                        "seconds": state.seconds})
        log(f"epoch {state.epoch}: train accuracy {train_acc:.2%}, validation accuracy {val_acc:.2%}, "
            f"validation loss {val_loss:.4f} ({state.seconds:.1f}s)")
        if on_epoch_end:
            on_epoch_end(state, improved)
    return state


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
