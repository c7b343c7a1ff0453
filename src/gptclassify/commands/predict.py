"""`gptclassify predict`: classify texts from the arguments, standard input, a file or a folder of files."""

from __future__ import annotations

import sys

from ..data.folder import InputFolder
from ..data.inputs import InputFile
from ..data.splits import read_lines, read_table, split_lines
from ..errors import UserError
from ..inference.backends import load_classifier
from ..inference.base import check_min_score
from ..inference.predict_file import output_format, predict_to


def read_texts(args) -> list[str]:
    """Texts from the arguments, `-` (stdin, one per line) or --input (lines, CSV, TSV or JSONL).
    Blank lines are not texts; how many were skipped is said on standard error."""
    texts, blank = [], 0

    def add_lines(lines: list[str]) -> None:
        nonlocal blank
        kept = [line for line in lines if line.strip()]
        texts.extend(kept)
        blank += len(lines) - len(kept)

    for t in args.texts:
        if t == "-":
            stream = getattr(sys.stdin, "buffer", None)
            add_lines(split_lines(stream.read().decode("utf-8", errors="replace") if stream else sys.stdin.read()))
        else:
            texts.append(t)
    if args.input:
        if args.input.suffix.lower() in (".csv", ".tsv", ".tab", ".jsonl", ".ndjson"):
            if not args.text_column:
                raise UserError(f"{args.input}: name the column of texts with --text-column")
            df = read_table(args.input, args.text_column, None, args.encoding, pair_column=args.text_pair_column)
            texts.extend(zip(df["text"], df["text_pair"]) if args.text_pair_column else df["text"].tolist())
        else:
            if not args.input.is_file():
                raise UserError(f"{args.input}: no such file")
            add_lines(read_lines(args.input, args.encoding))
    if blank:
        print(f"gptclassify: skipped {blank} blank line(s)", file=sys.stderr)
    if not texts:
        raise UserError("no texts: give them as arguments, '-' for standard input, or --input FILE")
    return texts


def input_folder(args) -> InputFolder:
    """--input FOLDER: every file under it a text, each prediction naming its file."""
    if args.texts or args.text_column or args.text_pair_column:
        raise UserError(f"{args.input}: a folder of files is the whole input (one text per file): "
                        "no texts, --text-column or --text-pair-column beside it")
    texts = InputFolder(args.input, args.encoding)
    if sum(1 for _ in texts) == 0:  # every file read once before the model loads: a bad one fails now, not hours in
        raise UserError(f"{args.input}: every file is empty")
    return texts  # listed once; predicting reads the files again (and counts the empty ones afresh)


def cmd_predict(args) -> None:
    if args.input and args.input.is_dir():
        texts = input_folder(args)
    elif args.input and not args.texts:  # a file, read as it goes: memory stays flat however long it is
        texts = InputFile(args.input, args.text_column, args.text_pair_column, args.encoding)
        if next(iter(texts), None) is None:
            raise UserError(f"{args.input}: no texts")
        texts = InputFile(args.input, args.text_column, args.text_pair_column, args.encoding)
    else:
        texts = read_texts(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be 1 or more")
    classifier = load_classifier(args.run, args.backend, args.device)
    check_min_score(args.min_score, classifier.task)
    predict_to(classifier, texts, args.output, output_format(args.format, args.output), args.batch_size,
               args.min_score)
    if getattr(texts, "blank", 0):
        what = "empty file(s)" if isinstance(texts, InputFolder) else "blank line(s)"
        print(f"gptclassify: skipped {texts.blank} {what}", file=sys.stderr)
