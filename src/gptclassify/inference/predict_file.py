"""Predictions for a whole input, written to a file (or standard output) in input order.

The input is read as it goes (`inputs.InputFile`, or `folder.InputFolder` for a folder of files)
and classified in chunks of CHUNK texts, each sorted by length into batches, so memory stays flat
however long the file. With `--output`, each
finished chunk is written at once (atomically) into a folder beside the output,
`.OUTPUT.parts/`, with a manifest naming the input, the run and the format; the output appears,
in one atomic rename, when every chunk is done. An interrupted prediction run again with the same
input, run and output continues after its last finished chunk. Under torchrun, chunk i belongs to
process i mod N: every text is batched with the same neighbours however many processes there
are, and the output is byte for byte the single process's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import sys
from itertools import islice
from pathlib import Path

from ..distributed import barrier, current
from ..errors import UserError
from ..failpoints import failpoint
from ..files import atomic_path, read_json, write_json, write_text
from ..progress import Progress

FORMATS = ("jsonl", "csv", "table")
CHUNK = 2048  # texts per model pass over the input: memory per process stays bounded by it
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "table"}


def output_format(fmt: str | None, output: Path | None) -> str:
    """--format when given, else what the output's extension says, else jsonl."""
    if fmt:
        return fmt
    return SUFFIX_FORMATS.get(output.suffix.lower(), "jsonl") if output else "jsonl"


def format_predictions(texts: list[str], predictions: list[dict], labels: list[str], fmt: str, header: bool,
                       task: str = "single-label", files: list[str] | None = None) -> str:
    """Each prediction beside its text (its pair's too), or beside the file it came from where
    `files` are given (a folder's input: a whole document is not repeated in the output)."""
    out = io.StringIO()
    pairs, named = any(isinstance(t, tuple) for t in texts), files is not None
    if named:
        texts = files
    if fmt == "jsonl":
        for text, p in zip(texts, predictions):
            shown = {"text": text[0], "text_pair": text[1]} if pairs else {"file" if named else "text": text}
            out.write(json.dumps({**shown, **p}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        if header:
            head = csv_header(labels, task)
            if pairs:
                head = head[:1] + ["text_pair"] + head[1:]
            writer.writerow(["file", *head[1:]] if named else head)
        for text, p in zip(texts, predictions):
            writer.writerow([*(text if pairs else [text]), *csv_values(p, task)])
    else:
        width = max(len(label) for label in labels)
        for text, p in zip(texts, predictions):
            text = " ‖ ".join(text) if pairs else text
            shown = text if len(text) <= 70 else text[:67] + "..."
            out.write(f"{text_summary(p, task, width)}  {shown}\n")
    return out.getvalue()


def csv_header(labels: list[str], task: str) -> list[str]:
    if task == "regression":
        return ["text", "value"]
    if task == "multi-label":
        return ["text", "labels", *(f"p_{label}" for label in labels)]
    return ["text", "label", "score", *(f"p_{label}" for label in labels)]


def csv_values(p: dict, task: str) -> list[str]:
    if task == "regression":
        return [f"{p['value']:.6g}"]
    if task == "multi-label":
        return ["|".join(p["labels"]), *(f"{v:.6f}" for v in p["scores"].values())]
    return [p["label"] or "", f"{p['score']:.6f}", *(f"{v:.6f}" for v in p["probabilities"].values())]


def text_summary(p: dict, task: str, width: int) -> str:
    if task == "regression":
        return f"{p['value']:>10.4g}"
    if task == "multi-label":
        return f"{','.join(p['labels']) or '(none)':<{width}}"
    return f"{p['label'] or '(unsure)':<{width}}  {p['score']:6.1%}"


def predict_to(classifier, texts, output: Path | None, fmt: str, batch_size: int | None = None,
               min_score: float | None = None) -> None:
    """Classify `texts` (a list, or an `InputFile` read as it goes) and write the predictions to
    `output` (standard output when None), chunk by chunk; under `min_score`, unlabelled."""
    world = current()
    if world.size > 1 and output is None:
        raise UserError("predict under torchrun writes a file: give --output FILE")
    streamed, named = hasattr(texts, "bytes_read"), getattr(texts, "yields_files", False)
    total, unit = (texts.size, "bytes") if streamed else (len(texts), "texts")
    if world.is_main and total > (1 << 20 if streamed else CHUNK):
        say(f"predict: {total:,} {unit} of input, in chunks of {CHUNK:,} texts"
            + (f"; chunk i goes to process i mod {world.size}" if world.size > 1 else ""))
    progress = Progress(total, unit, "predict", say, enabled=world.is_main and total > (1 << 20 if streamed else CHUNK))
    parts = None if output is None else Parts(Path(output), manifest(classifier, texts, fmt, min_score), world)
    count, seen = 0, 0
    for index, chunk in enumerate(chunks(texts)):
        count = index + 1
        if index % world.size == world.rank and not (parts and parts.done(index)):
            files, chunk = ([f for f, _ in chunk], [t for _, t in chunk]) if named else (None, chunk)
            text = format_predictions(chunk, classifier.predict(chunk, batch_size=batch_size, min_score=min_score),
                                      classifier.labels, fmt, header=index == 0, task=classifier.task, files=files)
            if parts:
                parts.write(index, text)
                failpoint("predict-chunk")
            else:
                sys.stdout.write(text)
        now = texts.bytes_read if streamed else seen + len(chunk)
        progress.update(now - seen)
        seen = now
    progress.close()
    if count == 0:  # no texts: a CSV still gets its header
        header = format_predictions([], [], classifier.labels, fmt, True, classifier.task, [] if named else None)
        if parts is None:
            sys.stdout.write(header)
        elif world.is_main:
            parts.write(0, header)
        count = 1
    if parts:
        parts.join(count)


def say(message: str) -> None:
    print(f"gptclassify: {message}", file=sys.stderr)


def chunks(texts):
    it = iter(texts)
    while chunk := list(islice(it, CHUNK)):
        yield chunk


def manifest(classifier, texts, fmt: str, min_score: float | None = None) -> dict:
    """What an unfinished output's parts were made from; parts made from anything else are not reused."""
    if hasattr(texts, "identity"):
        source = texts.identity()
    else:
        h = hashlib.sha256()
        for t in texts:
            for part in (t if isinstance(t, tuple) else (t,)):
                h.update(part.encode("utf-8", "surrogatepass") + b"\0")
            h.update(b"\1" if isinstance(t, tuple) else b"")
        source = {"texts_sha256": h.hexdigest(), "count": len(texts)}
    run = getattr(classifier, "run_dir", None)
    weights = Path(run) / "model.safetensors" if run else None
    return {"source": source, "format": fmt, "chunk": CHUNK, "min_score": min_score,
            "run": str(Path(run).resolve()) if run else None,
            "run_weights": [weights.stat().st_size, weights.stat().st_mtime_ns] if weights and weights.is_file() else None}


class Parts:
    """The finished chunks of one output, each its own file, beside the output until it is whole."""

    def __init__(self, output: Path, manifest: dict, world):
        self.output, self.world = output, world
        self.dir = output.with_name(f".{output.name}.parts")
        if world.is_main:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            previous = self.read_manifest()
            if previous is not None and previous != manifest:
                say(f"{self.dir}: parts of a prediction with another input, run or format: starting afresh")
            elif previous is not None:
                finished = len(list(self.dir.glob("chunk-*")))
                say(f"continuing an interrupted prediction: {finished:,} chunks of {CHUNK:,} texts already done")
            if previous != manifest and self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(exist_ok=True)
            write_json(self.dir / "manifest.json", manifest)
        barrier()  # the folder is ready before anyone writes into it

    def read_manifest(self) -> dict | None:
        if not (self.dir / "manifest.json").is_file():
            return None
        try:
            return read_json(self.dir / "manifest.json", max_bytes=1 << 20)
        except UserError:
            return None

    def path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:08d}"

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def write(self, index: int, text: str) -> None:
        write_text(self.path(index), text)

    def join(self, count: int) -> None:
        """Every chunk into the output, in order, in one atomic rename; then the parts go."""
        barrier()  # every part is written
        if self.world.is_main:
            missing = [i for i in range(count) if not self.done(i)]
            if missing:
                raise UserError(f"{self.dir}: chunk {missing[0]} is missing; run the same command again to finish it")
            with atomic_path(self.output) as tmp, open(tmp, "wb") as joined:
                for i in range(count):
                    with open(self.path(i), "rb") as part:
                        shutil.copyfileobj(part, joined)
            shutil.rmtree(self.dir)
        barrier()  # the output is complete before any process reports success
