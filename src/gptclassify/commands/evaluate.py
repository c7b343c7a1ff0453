"""`gptclassify evaluate`: a finished run's metrics on a split, as JSON."""

from __future__ import annotations

import json

from ..distributed import current
from ..inference.evaluate import evaluate_run


def cmd_evaluate(args) -> None:
    metrics = evaluate_run(args.run, args.data, args.split, args.device)
    if current().is_main:
        print(json.dumps(metrics, indent=2))
