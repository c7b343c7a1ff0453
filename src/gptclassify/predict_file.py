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
import shutil
import sys
from pathlib import Path

from .distributed import barrier, current
from .errors import UserError
from .files import atomic_path
from .progress import Progress

FORMATS = ("jsonl", "csv", "table")
CHUNK = 2048  # texts per model pass over the input: memory per process stays bounded by it
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
    """Classify `texts` and write the predictions to `output` (standard output when None).

    Texts go through the model in chunks of CHUNK, each sorted by length into batches; under
    torchrun each process takes a contiguous run of whole chunks. Every text therefore shares its
    batch with the same neighbours however many processes there are, and the output is the same
    to the last digit.
    """
    world = current()
    if world.size > 1 and output is None:
        raise UserError("predict under torchrun writes a file: give --output FILE")
    chunks = [range(i, min(i + CHUNK, len(texts))) for i in range(0, len(texts), CHUNK)]
    shard = world.contiguous_shard(len(chunks))
    mine = chunks[shard.start: shard.stop]

    def say(message: str) -> None:
        print(f"gptclassify: {message}", file=sys.stderr)

    def write_chunks(out) -> None:
        header = world.is_main
        n = sum(len(c) for c in mine)
        if world.is_main and len(texts) > CHUNK:
            say(f"predict: {len(texts):,} texts in {len(chunks):,} chunks of {CHUNK:,}"
                + (f", {n:,} of them in this process" if world.size > 1 else ""))
        progress = Progress(n, "texts", "predict", say, enabled=world.is_main and len(texts) > CHUNK)
        for chunk in mine:
            part = texts[chunk.start: chunk.stop]
            out.write(format_predictions(part, classifier.predict(part, batch_size=batch_size), classifier.labels,
                                         fmt, header))
            header = False
            progress.update(len(part))
        progress.close()
        if header and fmt == "csv":  # no texts of its own: rank 0 still writes the header
            out.write(format_predictions([], [], classifier.labels, fmt, True))

    if output is None:
        write_chunks(sys.stdout)
        return
    output = Path(output)
    target = output if world.size == 1 else part_path(output, world.rank)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        write_chunks(out)
    if world.size == 1:
        return
    barrier()  # every part is written
    if world.is_main:
        with atomic_path(output) as tmp, open(tmp, "wb") as joined:
            for rank in range(world.size):
                with open(part_path(output, rank), "rb") as part:
                    shutil.copyfileobj(part, joined)
        for rank in range(world.size):
            os.unlink(part_path(output, rank))
    barrier()  # the output is complete before any process reports success


def part_path(output: Path, rank: int) -> Path:
    return output.with_name(f".{output.name}.part{rank}")
