"""Does a prompt around each text help a model's last-token features? 5-fold cross-validation on
the book split's train + validation messages (1,194; the test split is never scored), each template
its own frozen pass, the default recipe otherwise (`lr_cv.fold_accuracy`: last block, 5 epochs,
batch 8, cosine). `{text}` marks where the message goes; `\\n` is a new line. `--pooling mean`
reads the mean of the last block's outputs over each text's tokens instead of its last token.

    python benchmarks/template_cv.py --weights FILE.gguf --lr 2e-4 \\
        --templates '{text}' 'Message: {text}\\nLabel:' 'SMS message: {text}\\nIs this message spam?'
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from common import book_split, save, scratch_dir
from lr_cv import fold_accuracy
from torch.utils.data import ConcatDataset

from gptclassify.config import POOLINGS, make_config
from gptclassify.data.splits import SPLITS
from gptclassify.training.prepare import prepare


def templated(src: Path, out: Path, template: str) -> Path:
    """A copy of the prepared data in `src` with every text put in `template`."""
    out.mkdir(parents=True)
    (out / "dataset.json").write_bytes((src / "dataset.json").read_bytes())
    for split in SPLITS:
        with open(src / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"], quoting=csv.QUOTE_ALL)
            writer.writeheader()
            for r in rows:
                writer.writerow({"text": template.replace("{text}", r["text"]).replace("\\n", "\n"), "label": r["label"]})
    return out


def cross_validated(weights: str, data: Path, run: Path, lr: float, folds: int, pooling: str) -> tuple[int, int]:
    """Texts right out of fold, and texts, over the training and validation splits."""
    trainer = prepare(None, weights, data, make_config(None, pooling=pooling), run)
    start = {n: q.detach().clone() for n, q in trainer.model.named_parameters() if q.requires_grad}
    texts = ConcatDataset([trainer.inputs.sets["train"], trainer.inputs.sets["validation"]])
    rows = list(range(len(texts)))
    random.Random(0).shuffle(rows)
    parts = [rows[k::folds] for k in range(folds)]
    cfg = make_config(None, lr=lr, lr_schedule="cosine", seed=123)
    right = sum(fold_accuracy(trainer, start, texts, [r for p in parts if p is not held for r in p], held, cfg)
                for held in parts)
    return right, len(texts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a GGUF file or a weights name")
    parser.add_argument("--templates", nargs="+", default=["{text}"])
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pooling", choices=POOLINGS, default="last-token")
    parser.add_argument("--save-as", default="template_cv")
    args = parser.parse_args()
    work = scratch_dir("gptclassify-template-cv-")
    src = book_split(work / "sms-book")
    results = []
    for i, template in enumerate(args.templates):
        right, n = cross_validated(args.weights, templated(src, work / f"data-{i}", template), work / f"run-{i}",
                                   args.lr, args.folds, args.pooling)
        results.append({"template": template, "pooling": args.pooling, "right": right, "texts": n, "accuracy": right / n})
        print(f"template {template!r} pooling {args.pooling} lr {args.lr:g}: {right}/{n} = {right / n:.2%}", flush=True)
        save(args.save_as, {"weights": Path(args.weights).name, "lr": args.lr, "folds": args.folds, "results": results})


if __name__ == "__main__":
    main()
