"""`gptclassify prepare`: make train/validation/test CSV files from the SMS collection, your own
table, or your own folder of files."""

from __future__ import annotations

from pathlib import Path

from ..data.folder import prepare_folder
from ..data.splits import SplitOptions, prepare_sms_spam, prepare_table, write_prepared
from ..errors import UserError


def cmd_prepare_sms(args) -> None:
    prepared = prepare_sms_spam(args.source, exact=args.exact, balance=not args.no_balance, seed=args.seed)
    write_prepared(prepared, args.out, params=vars_of(args))
    print_prepared(prepared, args.out)


def cmd_prepare_csv(args) -> None:
    if args.balance and args.task != "single-label":
        raise UserError(f"--balance undersamples classes: it is for single-label data, not {args.task}")
    if not args.label_separator:
        raise UserError("--label-separator must not be empty")
    prepared = prepare_table(args.file, args.text_column, args.label_column, options=split_options(args),
                             encoding=args.encoding, task=args.task, separator=args.label_separator,
                             pair_column=args.text_pair_column)
    write_prepared(prepared, args.out, params=vars_of(args))
    print_prepared(prepared, args.out)


def cmd_prepare_folder(args) -> None:
    if args.out.resolve().is_relative_to(args.folder.resolve()):
        raise UserError(f"--out {args.out} is inside {args.folder}: the next prepare would read its CSV files "
                        "as a class; write it elsewhere")
    prepared = prepare_folder(args.folder, split_options(args), encoding=args.encoding)
    write_prepared(prepared, args.out, params=vars_of(args))
    print(f"{prepared.info['files']:,} files in {len(prepared.labels)} class folders")
    print_prepared(prepared, args.out)


def split_options(args) -> SplitOptions:
    return SplitOptions(seed=args.seed, val_frac=args.val_frac, test_frac=args.test_frac,
                        balance="undersample" if args.balance else "none", split="stratified")


def print_prepared(prepared, out: Path) -> None:
    if "target" in prepared.info:  # regression: the target's spread in each split
        print(f"{'':6}  " + "  ".join(f"{k:>10}" for k in ("count", "mean", "std", "min", "max")))
        for split, t in prepared.info["target"].items():
            print(f"{split:<10}" + "  ".join(f"{t[k]:>10.4g}" for k in ("count", "mean", "std", "min", "max")))
    else:
        counts = prepared.info["counts"]
        width = max(len(label) for label in prepared.labels)
        print(f"{'':{width}}  " + "  ".join(f"{s:>10}" for s in counts))
        for label in prepared.labels:
            print(f"{label:{width}}  " + "  ".join(f"{counts[s][label]:>10}" for s in counts))
    for note in prepared.info.get("notes", []):
        print(f"note: {note}")
    dup = prepared.info["duplicates"]
    print(f"duplicate texts: {dup['duplicate_texts']}; validation texts also in train: "
          f"{dup['validation_texts_in_train']}; test texts also in train: {dup['test_texts_in_train']}")
    print(f"wrote {out}/train.csv, validation.csv, test.csv, dataset.json")


def vars_of(args) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}
