"""`gptclassify export`: a finished run as a transformers or an ONNX folder, written atomically."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..export.card import model_card
from ..export.check import check_export
from ..export.onnx_dir import write_onnx
from ..export.transformers_dir import refusal, write_transformers
from ..files import MAX_JSON_BYTES, atomic_dir, read_json, write_json, write_text
from ..rundir import load_run, read_run_config


def log(message: str) -> None:
    print(f"gptclassify: {message}", file=sys.stderr)


def cmd_export(args) -> None:
    run, out = Path(args.run), Path(args.out)
    config = read_run_config(run)
    why = refusal(config) if args.format == "transformers" else None
    if why:
        raise UserError(why)
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise UserError(f"--out {out}: would replace the run it exports; choose a directory outside it")
    model, tokenizer, config = load_run(run, "cpu")
    with atomic_dir(out, args.overwrite) as tmp:
        write = write_transformers if args.format == "transformers" else write_onnx
        notes = write(tmp, model, tokenizer, config, log)
        check = check_export(tmp, args.format, run, config, log)
        metrics = read_json(run / "metrics.json", MAX_JSON_BYTES) if (run / "metrics.json").is_file() else {}
        if args.format == "onnx" and metrics:  # the service's /v1/model shows them, as it does for the run
            write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "README.md", model_card(args.format, config, metrics, notes, check))
    log(f"wrote {out} ({args.format}); {check}")
    for note in notes:
        log(f"differs from the run: {note}")
