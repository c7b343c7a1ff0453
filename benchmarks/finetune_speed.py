"""Fine-tuning speed, side by side, on GPT-2 124M (random weights) and the book's split:

  (a) the book's recipe as the book runs it: its GPTModel and train_classifier_simple, inputs
      padded to the longest training message (120 tokens), last position, eval_freq 50 / eval_iter 5
  (b) Hugging Face transformers GPT2ForSequenceClassification, same data, freezing and optimizer,
      each batch padded to its longest message, accuracy on the full splits after each epoch
  (c) gptclassify with its defaults (`training.run`, as `gptclassify train --weights random` runs it)
  (d) the floor: one forward pass of the full model over every train, validation and test message
  (e) gptclassify with the frozen-prefix cache computed and kept in bf16
  (f) gptclassify running the book's recipe (`--preset book`: padding to 120, last position,
      drop_last, eval_freq 50 / eval_iter 5): the same per-step losses as (a) (tests/test_train.py),
      so the same accuracy, through the cache

Each runs in its own process (so peak memory is its own); model construction is included in the
wall time, preparing the CSV split is not. 5 epochs, batch 8, AdamW lr 5e-5, weight decay 0.1.

    python benchmarks/finetune_speed.py [--methods a b c d e f] [--epochs 5] [--save-as NAME]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from common import book_split, peak_rss_mb, save, scratch_dir

EPOCHS, BATCH, LR, WD = 5, 8, 5e-5, 0.1


def method_a(data: Path, epochs: int) -> dict:
    import book_reference as book
    from torch.utils.data import DataLoader

    from gptclassify import get_tokenizer

    started = time.perf_counter()
    tokenizer = get_tokenizer("gpt2")
    train_ds = book.SpamDataset(pd.read_csv(data / "train.csv", keep_default_na=False), tokenizer)
    val_ds = book.SpamDataset(pd.read_csv(data / "validation.csv", keep_default_na=False), tokenizer, train_ds.max_length)
    test_ds = book.SpamDataset(pd.read_csv(data / "test.csv", keep_default_na=False), tokenizer, train_ds.max_length)
    torch.manual_seed(123)
    train_loader = DataLoader(train_ds, batch_size=BATCH, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_ds, batch_size=BATCH)
    test_loader = DataLoader(test_ds, batch_size=BATCH)
    model = book.GPTModel(book.BASE_CONFIG)
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(768, 2)
    for p in [*model.trf_blocks[-1].parameters(), *model.final_norm.parameters()]:
        p.requires_grad = True
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    train_started = time.perf_counter()
    *_, examples = book.train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", epochs, 50, 5)
    train_seconds = time.perf_counter() - train_started
    test_acc = book.calc_accuracy_loader(test_loader, model, "cpu")
    return {"padded_to": train_ds.max_length, "test_accuracy": test_acc, "train_seconds": train_seconds,
            "examples": examples, "wall_seconds": time.perf_counter() - started}


def method_b(data: Path, epochs: int) -> dict:
    import transformers
    from torch.utils.data import DataLoader

    from gptclassify import get_tokenizer

    started = time.perf_counter()
    tokenizer = get_tokenizer("gpt2")
    splits = {s: pd.read_csv(data / f"{s}.csv", keep_default_na=False) for s in ("train", "validation", "test")}
    encoded = {s: [(tokenizer.encode(t), {"ham": 0, "spam": 1}[y]) for t, y in zip(df["text"], df["label"])]
               for s, df in splits.items()}

    def collate(batch):  # what DataCollatorWithPadding does: pad to the batch's longest, with a mask
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [50256] * (width - len(i)) for i, _ in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        return ids, mask, torch.tensor([y for _, y in batch])

    torch.manual_seed(123)
    config = transformers.GPT2Config(num_labels=2, pad_token_id=50256)
    model = transformers.GPT2ForSequenceClassification(config)
    for p in model.parameters():
        p.requires_grad = False
    for p in [*model.transformer.h[-1].parameters(), *model.transformer.ln_f.parameters(), *model.score.parameters()]:
        p.requires_grad = True
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=WD)
    loaders = {s: DataLoader(e, batch_size=BATCH, shuffle=(s == "train"), collate_fn=collate) for s, e in encoded.items()}

    def accuracy(loader):
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for ids, mask, y in loader:
                correct += (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum().item()
                seen += len(y)
        return correct / seen

    train_started = time.perf_counter()
    examples = 0
    for _ in range(epochs):
        model.train()
        for ids, mask, y in loaders["train"]:
            optimizer.zero_grad()
            loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
            loss.backward()
            optimizer.step()
            examples += len(y)
        accuracy(loaders["train"]), accuracy(loaders["validation"])
    train_seconds = time.perf_counter() - train_started
    return {"test_accuracy": accuracy(loaders["test"]), "train_seconds": train_seconds, "examples": examples,
            "wall_seconds": time.perf_counter() - started}


def method_c(data: Path, epochs: int, preset: str | None = None, **options) -> dict:
    from gptclassify.training.run import train_run
    from gptclassify.config import make_config

    started = time.perf_counter()
    out = scratch_dir("gptclassify-speed-")
    cfg = make_config(preset, epochs=epochs, **options)
    metrics = train_run("gpt2", "random", data, cfg, out / "run", log=lambda *a: None)
    return {"test_accuracy": metrics["test"]["accuracy"], "train_seconds": metrics["training"]["seconds"],
            "examples": metrics["training"]["examples_seen"], "wall_seconds": time.perf_counter() - started}


def method_d(data: Path, epochs: int) -> dict:
    from gptclassify import GPTModel, get_tokenizer, gpt2_config
    from gptclassify.classifier.head import add_classifier_head

    started = time.perf_counter()
    tokenizer = get_tokenizer("gpt2")
    texts = [t for s in ("train", "validation", "test")
             for t in pd.read_csv(data / f"{s}.csv", keep_default_na=False)["text"]]
    torch.manual_seed(123)
    model = add_classifier_head(GPTModel(gpt2_config("gpt2")).eval(), 2)
    encoded = sorted((tokenizer.encode(t)[:1024] for t in texts), key=len)
    with torch.inference_mode():
        for i in range(0, len(encoded), 32):
            batch = encoded[i:i + 32]
            width = max(map(len, batch))
            ids = torch.tensor([e + [50256] * (width - len(e)) for e in batch])
            model.out_head(model.final_norm(model.trf_blocks(model.embed(ids))))
    return {"examples": len(encoded), "wall_seconds": time.perf_counter() - started}


def method_e(data: Path, epochs: int) -> dict:
    return method_c(data, epochs, cache_dtype="bfloat16")


def method_f(data: Path, epochs: int) -> dict:
    return method_c(data, epochs, preset="book")


METHODS = {"a": method_a, "b": method_b, "c": method_c, "d": method_d, "e": method_e, "f": method_f}
NAMES = {"a": "book recipe (book's code)", "b": "transformers GPT2ForSequenceClassification",
         "c": "gptclassify defaults", "d": "floor: one full forward pass over every message",
         "e": "gptclassify --cache-dtype bfloat16", "f": "gptclassify --preset book"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["c", "d", "e", "f", "b", "a"], choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--save-as", default="finetune_speed", help="results/NAME.json (default: finetune_speed)")
    parser.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)  # run one method in this process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = METHODS[args.one](args.data, args.epochs)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return

    data = book_split(scratch_dir("gptclassify-speed-data-") / "sms")
    results = {}
    for m in args.methods:
        out = subprocess.run([sys.executable, __file__, "--one", m, "--data", str(data), "--epochs", str(args.epochs)],
                             capture_output=True, text=True, cwd=Path(__file__).parent)
        if out.returncode != 0:
            sys.exit(f"method {m} failed:\n{out.stderr[-3000:]}")
        results[m] = {"name": NAMES[m], **json.loads(out.stdout.strip().splitlines()[-1])}
        print(m, json.dumps(results[m]), flush=True)
    if "c" in results:
        c = results["c"]["wall_seconds"]
        for m, r in results.items():
            r["wall_vs_c"] = r["wall_seconds"] / c
    path = save(args.save_as, {"epochs": args.epochs, "results": results})
    print("| method | wall s | × gptclassify | train examples/s | peak RSS MB | test accuracy |")
    print("|---|---|---|---|---|---|")
    for m, r in results.items():
        eps = r["examples"] / r["train_seconds"] if "train_seconds" in r else r["examples"] / r["wall_seconds"]
        acc = f"{r['test_accuracy']:.2%}" if "test_accuracy" in r else "-"
        print(f"| ({m}) {r['name']} | {r['wall_seconds']:.1f} | {r.get('wall_vs_c', float('nan')):.2f} | {eps:.1f} "
              f"| {r['peak_rss_mb']:.0f} | {acc} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
