"""Choose the learning rate without looking at the test split: 5-fold cross-validation on the
book split's train + validation messages (1,194), SmolLM2-135M-Instruct, the default recipe
otherwise (last block, last-token pooling, 5 epochs, batch 8, AdamW weight decay 0.1).

The frozen prefix is computed once for all messages (the feature cache); each fold and rate
trains the last block, final norm and head from the same starting weights.

    python benchmarks/lr_cv.py [--lrs 5e-5 1e-4 2e-4 4e-4 8e-4] [--schedules constant cosine]
                               [--seeds 0 1 2] [--folds 5] [--prefix-dtype float32] [--save-as NAME]
    python benchmarks/lr_cv.py --model gemma-3-270m-gguf --weights gemma-3-270m-gguf ...   # another model
"""

from __future__ import annotations

import argparse
import random

import torch
from common import book_split, save, scratch_dir
from torch.utils.data import ConcatDataset, DataLoader, Subset

from gptclassify.data.batches import ShardedLoader
from gptclassify.distributed import World
from gptclassify.training.features import collate_features
from gptclassify.training.prepare import Prepared, prepare
from gptclassify.config import SCHEDULES, make_config
from gptclassify.training.steps import calc_accuracy_loader, calc_loss_batch, make_optimizer


def start_fold(trainer: Prepared, start_weights: dict, data, train_rows, cfg):
    """The trainable weights put back to `start_weights`; a shuffled loader over `train_rows`, its optimizer and schedule."""
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if name in start_weights:
                p.copy_(start_weights[name])
    torch.manual_seed(cfg.seed)
    loader = DataLoader(Subset(data, train_rows), batch_size=cfg.batch_size, shuffle=True,
                        collate_fn=collate_features)
    optimizer, scheduler = make_optimizer(trainer.model, cfg, cfg.epochs * len(loader))
    return loader, optimizer, scheduler


def train_epoch(trainer: Prepared, loader, optimizer, scheduler) -> None:
    trainer.model.train()
    for batch in loader:
        optimizer.zero_grad()
        calc_loss_batch(batch, trainer.logits_fn, trainer.device).backward()
        optimizer.step()
        scheduler.step()


def fold_accuracy(trainer: Prepared, start_weights: dict, data, train_rows, held_rows, cfg) -> int:
    """Train from `start_weights` on `train_rows` of `data` with `cfg`; count correct predictions on `held_rows`."""
    model = trainer.model
    loader, optimizer, scheduler = start_fold(trainer, start_weights, data, train_rows, cfg)
    for _ in range(cfg.epochs):
        train_epoch(trainer, loader, optimizer, scheduler)
    model.eval()
    held = ShardedLoader(Subset(data, held_rows), len(held_rows), 64, collate_features, World())
    return round(calc_accuracy_loader(held, trainer.logits_fn, trainer.device) * len(held_rows))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default="smollm2-135m-instruct-gguf")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-5, 1e-4, 2e-4, 4e-4, 8e-4])
    parser.add_argument("--schedules", nargs="+", default=["constant"], choices=SCHEDULES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="each seed draws its own folds and shuffling order (repeated cross-validation)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--prefix-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="the frozen prefix's precision (default: train's rule for this machine)")
    parser.add_argument("--save-as", default="lr_cv")
    args = parser.parse_args()

    work = scratch_dir("gptclassify-lr-cv-")
    trainer = prepare(args.model, args.weights, book_split(work / "data"), make_config(None, prefix_dtype=args.prefix_dtype),
                      work / "run")
    start_weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    data = ConcatDataset([trainer.inputs.sets["train"], trainer.inputs.sets["validation"]])
    results = []
    for schedule in args.schedules:
        for lr in args.lrs:
            correct = 0
            for seed in args.seeds:
                rows = list(range(len(data)))
                random.Random(seed).shuffle(rows)
                folds = [rows[k::args.folds] for k in range(args.folds)]
                cfg = make_config(None, lr=lr, lr_schedule=schedule, seed=seed + 123)
                correct += sum(fold_accuracy(trainer, start_weights, data,
                                             [r for f in folds if f is not held for r in f], held, cfg)
                               for held in folds)
            total = len(data) * len(args.seeds)
            results.append({"lr": lr, "schedule": schedule, "correct": correct, "predictions": total,
                            "accuracy": correct / total})
            print(f"{schedule} lr {lr:g}: {correct}/{total} = {correct / total:.2%}", flush=True)
    meta = {"weights": args.weights, "folds": args.folds, "seeds": args.seeds, "messages": len(data),
            "prefix_dtype": str(trainer.classifier.prefix.dtype)}
    print(f"wrote {save(args.save_as, {**meta, 'results': results})}")


if __name__ == "__main__":
    main()
