"""The parts of a training step and the evaluations between steps (the loop itself: `run.fit`).

The book's names are kept (`calc_loss_batch`, `calc_loss_loader`, `calc_accuracy_loader`,
`evaluate_model`) with one change: they take a `logits_fn` (token ids or cached hidden states in,
class logits out) instead of calling `model(x)[:, -1, :]`, so pooling and the feature cache live
in one place. Beside them: the optimizer and its schedule, and `TrainState`, what a checkpoint
records of where training stands.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..classifier.head import suffix_logits
from ..classifier.pooling import combine_windows
from ..config import TrainConfig
from ..classifier.tasks import balanced_positive_weights, loss_fn
from ..distributed import all_reduce_sum
from ..errors import UserError


def make_logits_fn(model, start: int, pooling: str, cached: bool, autocast, prefix=None, recompute: bool = False,
                   combine: str = "mean"):
    """A function from a batch's inputs (token ids, or cached states entering block `start`) and
    true lengths to class logits. The frozen prefix (`prefix.FrozenPrefix`, in its own precision)
    runs without gradients; with `recompute`, the trained blocks keep only their inputs for backward.
    A batch of windows (`owners`: each window's text) gives its texts' logits, `combine`d."""

    def logits_fn(inputs, lengths, owners=None):
        with autocast():
            if cached:
                x = inputs
            elif start < 0:  # every layer trains, the embeddings too
                x = model.embed(inputs)
            else:
                x = prefix(inputs).float()
            logits = suffix_logits(model, x, lengths, start, pooling, recompute).float()
        return logits if owners is None else combine_windows(logits, owners, combine)

    return logits_fn


def calc_loss_batch(batch, logits_fn, device, divide_by: int | None = None, weight: torch.Tensor | None = None,
                    huber: bool = False):
    """The batch's mean loss (cross-entropy for class ids; for other targets, `tasks.loss_fn`'s);
    under torchrun, with `divide_by` the global batch size, this process's share of the global
    batch's mean (the shares add up to it). With class weights, each example's loss is weighted by
    its class's weight and divided by the batch size (multi-label: each label's positives weighted)."""
    inputs, targets, lengths, *owners = (t.to(device, non_blocking=True) for t in batch)
    logits = logits_fn(inputs, lengths, *owners)
    if divide_by is None and weight is None and not targets.is_floating_point():
        return F.cross_entropy(logits, targets)
    summed = loss_fn(logits, targets, weight, "sum", huber)
    return summed / (divide_by or len(targets))


def balanced_class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """n / (classes * count of the class), as scikit-learn's `class_weight="balanced"`."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float()
    if (counts == 0).any():
        raise UserError("--class-weight balanced: a class has no training example")
    return len(labels) / (num_classes * counts)


def class_weights(cfg, task: str, targets: list, num_labels: int, device) -> torch.Tensor | None:
    """--class-weight balanced's weights from these training targets (per class, or per label's
    positives for multi-label), on `device`; None without the option."""
    if cfg.class_weight != "balanced":
        return None
    weight = balanced_positive_weights(targets) if task == "multi-label" else balanced_class_weights(targets, num_labels)
    return weight.to(device)


def macro_f1(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = ((predicted == c) & (targets == c)).sum().item()
        fp = ((predicted == c) & (targets != c)).sum().item()
        fn = ((predicted != c) & (targets == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / num_classes


def share_of(loader, global_size: int) -> int | None:
    """What a process divides its summed loss by: nothing alone (the plain mean), else the global batch."""
    return None if loader.world.size == 1 else global_size


def first_batches(loader, num_batches):
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    for i, item in enumerate(loader):
        if i >= num_batches:
            break
        yield item


def calc_loss_loader(loader, logits_fn, device, num_batches=None, huber: bool = False):
    """Mean loss over the first `num_batches` global batches of a `ShardedLoader`."""
    if len(loader) == 0:
        return float("nan")
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    total = torch.zeros(1, dtype=torch.float64)
    with torch.no_grad():
        for batch, size in first_batches(loader, num_batches):
            if batch is not None:
                total += calc_loss_batch(batch, logits_fn, device, share_of(loader, size), huber=huber).item()
    return all_reduce_sum(total).item() / num_batches


def calc_accuracy_loader(loader, logits_fn, device, num_batches=None):
    counts = torch.zeros(2, dtype=torch.int64)  # correct, seen
    with torch.no_grad():
        for batch, _ in first_batches(loader, num_batches):
            if batch is not None:
                inputs, targets, lengths, *owners = (t.to(device) for t in batch)
                predicted = logits_fn(inputs, lengths, *owners).argmax(dim=-1)
                counts += torch.tensor([(predicted == targets).sum().item(), predicted.shape[0]])
    correct, seen = all_reduce_sum(counts).tolist()
    return correct / seen if seen else float("nan")


def evaluate_model(model, train_loader, val_loader, logits_fn, device, eval_iter, huber: bool = False):
    model.eval()
    train_loss = calc_loss_loader(train_loader, logits_fn, device, num_batches=eval_iter, huber=huber)
    val_loss = None if val_loader is None else calc_loss_loader(val_loader, logits_fn, device, num_batches=eval_iter,
                                                                huber=huber)
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
        self.pending: list[torch.Tensor] = []  # step losses not yet read back from the device (see `run.fit`)

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
