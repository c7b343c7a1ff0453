"""Choose the default recipe's rate and its epoch rule (last epoch, best epoch by a validation
metric, early stopping) without the test split: k-fold cross-validation on a prepared dataset's
train + validation examples, SmolLM2-135M-Instruct, last block + final norm + head trained
(or `--trainable last-N-blocks`).

In each fold, the held-out part is scored; the rest is split again into training (85%) and an
inner validation set (15%) that plays the role `--select-by` and `--early-stopping` give the
validation split. One training per (rate, fold) yields every epoch rule's held-out predictions:
the rule picks an epoch from the inner-validation curve, and that epoch's held-out predictions
count. The frozen prefix comes from the feature cache (the first run of a dataset pays it).

    python recipe_cv.py --data data/fortunes-small [--lrs 2e-4 4e-4 8e-4] [--folds 5] [--trainable last-4-blocks]
                        [--max-length N] [--truncation head|tail|head+tail] --save-as NAME
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import book_split, save, scratch_dir
from lr_cv import start_fold, train_epoch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from gptclassify.training.features import collate_features
from gptclassify.training.prepare import Prepared, prepare
from gptclassify.data.tokenizer import TRUNCATIONS
from gptclassify.config import make_config, with_family_defaults
from gptclassify.training.steps import macro_f1

RULES = {  # rule name -> how it picks an epoch from the inner-validation curve (losses, accuracies, macro-F1s)
    "last epoch": lambda c: len(c["loss"]),
    "best loss": lambda c: best(c["loss"], lower=True),
    "best accuracy": lambda c: best(c["accuracy"]),
    "best macro-F1": lambda c: best(c["macro_f1"]),
    "early stopping (loss, patience 1)": lambda c: best(c["loss"], lower=True, patience=1),
    "early stopping (loss, patience 2)": lambda c: best(c["loss"], lower=True, patience=2),
}


def best(values: list[float], lower: bool = False, patience: int | None = None) -> int:
    """The 1-based epoch a run keeps: the first strictly best value, stopping `patience` epochs after it."""
    chosen, score = 1, None
    for epoch, v in enumerate(values, start=1):
        s = -v if lower else v
        if score is None or s > score:
            chosen, score = epoch, s
        elif patience is not None and epoch - chosen >= patience:
            break
    return chosen


def logits_of(trainer: Prepared, data, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(Subset(data, rows), batch_size=64, collate_fn=collate_features)
    out, targets = [], []
    with torch.no_grad():
        for inputs, labels, lengths in loader:
            out.append(trainer.logits_fn(inputs.to(trainer.device), lengths.to(trainer.device)).float())
            targets.append(labels)
    return torch.cat(out), torch.cat(targets)


def fold_curves(trainer, start_weights, data, train_rows, inner_rows, held_rows, cfg, classes):
    """Train from `start_weights`; after each epoch the inner-validation metrics and held-out predictions."""
    model = trainer.model
    loader, optimizer, scheduler = start_fold(trainer, start_weights, data, train_rows, cfg)
    curve = {"loss": [], "accuracy": [], "macro_f1": [], "held": []}
    for _ in range(cfg.epochs):
        train_epoch(trainer, loader, optimizer, scheduler)
        model.eval()
        logits, targets = logits_of(trainer, data, inner_rows)
        curve["loss"].append(F.cross_entropy(logits, targets).item())
        curve["accuracy"].append((logits.argmax(-1) == targets).float().mean().item())
        curve["macro_f1"].append(macro_f1(logits.argmax(-1), targets, classes))
        held_logits, held_targets = logits_of(trainer, data, held_rows)
        curve["held"].append((held_logits.argmax(-1), held_targets))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a prepared dataset (default: the book's SMS split)")
    parser.add_argument("--weights", default="smollm2-135m-instruct-gguf")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lrs", nargs="+", type=float, default=[2e-4, 4e-4, 8e-4])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainable", default="last-block", help="last-block or last-N-blocks (LoRA: not here)")
    parser.add_argument("--max-length", type=int, help="the token cap (default: gptclassify's)")
    parser.add_argument("--truncation", choices=TRUNCATIONS, help="the tokens a longer text keeps (default: train's)")
    parser.add_argument("--save-as", required=True)
    args = parser.parse_args()

    started = time.perf_counter()
    work = scratch_dir("gptclassify-recipe-cv-")
    data_dir = Path(args.data) if args.data else book_split(work / "data")
    config = make_config(None, trainable=args.trainable, max_length=args.max_length, truncation=args.truncation)
    trainer = prepare(args.model, args.weights, data_dir, config, work / "run")
    classes = len(trainer.labels)
    start_weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    data = ConcatDataset([trainer.inputs.sets["train"], trainer.inputs.sets["validation"]])
    rows = list(range(len(data)))
    random.Random(args.seed).shuffle(rows)
    folds = [rows[k::args.folds] for k in range(args.folds)]
    results = []
    for lr in args.lrs:
        cfg = with_family_defaults(make_config(None, lr=lr, epochs=args.epochs, seed=args.seed + 123), "llama")
        picked = {rule: ([], []) for rule in RULES}
        epochs_kept = {rule: [] for rule in RULES}
        for k, held in enumerate(folds):
            rest = [r for j, f in enumerate(folds) if j != k for r in f]
            inner = rest[: len(rest) * 15 // 100]
            curve = fold_curves(trainer, start_weights, data, rest[len(inner):], inner, held, cfg, classes)
            for rule, choose in RULES.items():
                epoch = choose(curve)
                predicted, targets = curve["held"][epoch - 1]
                picked[rule][0].append(predicted)
                picked[rule][1].append(targets)
                epochs_kept[rule].append(epoch)
        for rule, (predicted, targets) in picked.items():
            predicted, targets = torch.cat(predicted), torch.cat(targets)
            row = {"lr": lr, "schedule": cfg.lr_schedule, "epochs": args.epochs, "trainable": args.trainable,
                   "max_length": trainer.tokens.max_length, "truncation": config.truncation, "rule": rule,
                   "accuracy": (predicted == targets).float().mean().item(),
                   "macro_f1": macro_f1(predicted, targets, classes), "epochs_kept": epochs_kept[rule]}
            results.append(row)
            print(f"lr {lr:g} {rule}: accuracy {row['accuracy']:.2%}, macro-F1 {row['macro_f1']:.4f}, "
                  f"epochs kept {row['epochs_kept']}", flush=True)
    meta = {"data": str(data_dir), "weights": args.weights, "folds": args.folds, "seed": args.seed,
            "examples": len(data), "inner_validation": "15% of each fold's training part",
            "seconds": time.perf_counter() - started}
    print(f"wrote {save(args.save_as, {**meta, 'results': results})}")


if __name__ == "__main__":
    main()
