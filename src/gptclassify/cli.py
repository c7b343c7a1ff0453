"""The `gptclassify` command: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


def cmd_prepare_sms(args) -> None:
    from .data import prepare_sms_spam, write_prepared

    prepared = prepare_sms_spam(args.source, exact=args.exact, balance=not args.no_balance, seed=args.seed)
    write_prepared(prepared, args.out, params=vars_of(args))
    print_prepared(prepared, args.out)


def cmd_prepare_csv(args) -> None:
    from .data import SplitOptions, prepare_table, write_prepared

    options = SplitOptions(seed=args.seed, val_frac=args.val_frac, test_frac=args.test_frac,
                           balance="undersample" if args.balance else "none", split="stratified")
    prepared = prepare_table(args.file, args.text_column, args.label_column, options=options, encoding=args.encoding)
    write_prepared(prepared, args.out, params=vars_of(args))
    print_prepared(prepared, args.out)


def print_prepared(prepared, out: Path) -> None:
    counts = prepared.info["counts"]
    width = max(len(label) for label in prepared.labels)
    print(f"{'':{width}}  " + "  ".join(f"{s:>10}" for s in counts))
    for label in prepared.labels:
        print(f"{label:{width}}  " + "  ".join(f"{counts[s][label]:>10}" for s in counts))
    dup = prepared.info["duplicates"]
    print(f"duplicate texts: {dup['duplicate_texts']}; validation texts also in train: "
          f"{dup['validation_texts_in_train']}; test texts also in train: {dup['test_texts_in_train']}")
    print(f"wrote {out}/train.csv, validation.csv, test.csv, dataset.json")


def vars_of(args) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptclassify", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prepare = sub.add_parser("prepare", help="make train/validation/test CSV files").add_subparsers(
        dest="source_kind", required=True)
    p = prepare.add_parser("sms-spam", help="the UCI SMS Spam Collection, split as the book does")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", help="a local zip or SMSSpamCollection file, or a URL (default: download from UCI)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--exact", action="store_true",
                   help="read all 5,574 lines (quoting off) and split stratified, instead of the book's 5,572")
    p.add_argument("--no-balance", action="store_true", help="keep every ham message (unbalanced)")
    p.set_defaults(func=cmd_prepare_sms)

    p = prepare.add_parser("csv", help="your own labelled CSV, TSV or JSONL file")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--balance", action="store_true", help="undersample every class to the smallest")
    p.add_argument("--encoding", default="utf-8")
    p.set_defaults(func=cmd_prepare_csv)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"gptclassify: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gptclassify: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
