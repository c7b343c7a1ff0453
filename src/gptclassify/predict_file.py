"""Predictions for a whole input, written to a file (or standard output) in input order.

Under torchrun the input is cut into contiguous shards, one per process; each process writes its
part beside the output, and rank 0 joins the parts in order into the output in one atomic rename.
A single process writes the same file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from .distributed import barrier, current
from .errors import UserError
from .files import atomic_path

FORMATS = ("jsonl", "csv", "table")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "table"}


def output_format(fmt: str | None, output: Path | None) -> str:
    """--format when given, else what the output's extension says, else jsonl."""
    if fmt:
        return fmt
    return SUFFIX_FORMATS.get(output.suffix.lower(), "jsonl") if output else "jsonl"


def format_predictions(texts: list[str], predictions: list[dict], labels: list[str], fmt: str, header: bool) -> str:
    out = io.StringIO()
    if fmt == "jsonl":
        for text, p in zip(texts, predictions):
            out.write(json.dumps({"text": text, **p}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(["text", "label", "score", *(f"p_{label}" for label in labels)])
        for text, p in zip(texts, predictions):
            writer.writerow([text, p["label"], f"{p['score']:.6f}", *(f"{v:.6f}" for v in p["probabilities"].values())])
    else:
        width = max(len(label) for label in labels)
        for text, p in zip(texts, predictions):
            shown = text if len(text) <= 70 else text[:67] + "..."
            out.write(f"{p['label']:<{width}}  {p['score']:6.1%}  {shown}\n")
    return out.getvalue()


def predict_to(classifier, texts: list[str], output: Path | None, fmt: str, batch_size: int = 32) -> None:
    """Classify `texts` and write the predictions to `output` (standard output when None)."""
    world = current()
    if world.size > 1 and output is None:
        raise UserError("predict under torchrun writes a file: give --output FILE")
    shard = world.contiguous_shard(len(texts))
    mine = texts[shard.start: shard.stop]
    text = format_predictions(mine, classifier.predict(mine, batch_size=batch_size) if mine else [],
                              classifier.labels, fmt, header=world.is_main)
    if output is None:
        sys.stdout.write(text)
        return
    output = Path(output)
    if world.size == 1:
        with atomic_path(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return
    part = part_path(output, world.rank)
    with atomic_path(part) as tmp:
        tmp.write_text(text, encoding="utf-8")
    barrier()  # every part is written
    if world.is_main:
        with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as joined:
            for rank in range(world.size):
                joined.write(part_path(output, rank).read_text(encoding="utf-8"))
        for rank in range(world.size):
            os.unlink(part_path(output, rank))
    barrier()  # the output is complete before any process reports success


def part_path(output: Path, rank: int) -> Path:
    return output.with_name(f".{output.name}.part{rank}")
