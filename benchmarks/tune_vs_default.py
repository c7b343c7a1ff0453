"""`gptclassify tune` against the default recipe on the accuracy table's datasets, SmolLM2-135M-Instruct
(real weights): test accuracy and macro-F1 of each, tune's whole wall time as a multiple of one default
`train` (both in their own process, each in a fresh feature cache, so each pays its frozen passes),
and the expected calibration error, Brier score and NLL of the test split before and after the run's
temperature, each change with its paired-bootstrap interval (calibration_spread.py).

    ../.venv/bin/python tune_vs_default.py                       # sms, rotten-tomatoes, fortunes, spam-assassin
    ../.venv/bin/python tune_vs_default.py --datasets sms --folds 5 --budget 30m
    ../.venv/bin/python tune_vs_default.py --budget-multiple 4     # tune's budget: 4 x the default's wall time
    ../.venv/bin/python tune_vs_default.py --model gemma-3-270m-gguf --results tune_vs_default_gemma3
    ../.venv/bin/python tune_vs_default.py --default-only --results calibration_defaults   # the defaults alone

Rows measured by earlier invocations are kept in results/tune_vs_default.json (or --results NAME's).
"""

from __future__ import annotations

import argparse
import json
import os

from accuracy_table import dataset
from calibration_spread import spread
from common import RESULTS, save, scratch_dir
from long_text import GPTCLASSIFY, MODEL, WEIGHTS, measured, model_args

def one(command: str, data, work, extra: list[str], model: str | None = None) -> dict:
    run = work / command
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{command}")}
    cmd = [GPTCLASSIFY, command, "--data", str(data), *model_args(model), "--out", str(run), "--overwrite", *extra]
    wall, rss, status = measured(cmd, env)
    if status != 0:
        raise SystemExit(f"{command}: failed ({status})")
    test = json.loads((run / "metrics.json").read_text())["test"]
    config = json.loads((run / "config.json").read_text())
    row = {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"], "test_texts": test["examples"],
           "ece_before": test["calibration"]["ece_before"], "ece_after": test["calibration"]["ece"],
           "temperature": config.get("temperature"), "wall_seconds": wall, "peak_rss_mb": rss,
           "recipe": f"{config['training']['trainable']}, lr {config['training']['lr']:.3g}, "
                     f"{config['training']['lr_schedule']}, {config['training']['epochs']} epochs"}
    row["calibration_spread"] = spread(run, data)  # ECE, Brier and NLL before/after, with paired-bootstrap intervals
    if (run / "tuning.json").is_file():
        tuning = json.loads((run / "tuning.json").read_text())
        row.update(grid=tuning["grid"], grid_full=tuning["grid_full"], trainings=tuning["trainings"],
                   scores=tuning.get("scores"), side_by_side=tuning.get("side_by_side"), per_fold=tuning.get("per_fold"),
                   cv_seconds=tuning["seconds"], winner_cv=tuning["recipes"][0]["mean"],
                   table=[{k: r.get(k) for k in ("recipe", "mean", "std", "folds")} for r in tuning["recipes"]])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sms", "rotten-tomatoes", "fortunes", "spam-assassin"])
    parser.add_argument("--folds", default="5")
    parser.add_argument("--budget", help="tune's --budget (default: the whole grid)")
    parser.add_argument("--budget-multiple", type=float, help="tune's --budget as this multiple of the default "
                                                              "train's wall time, measured just before")
    parser.add_argument("--results", default="tune_vs_default", help="the results file's name under results/")
    parser.add_argument("--model", help="another model (a name, hub id or .gguf; default SmolLM2-135M-Instruct)")
    parser.add_argument("--default-only", action="store_true", help="only the default `train` of each dataset "
                        "(its accuracy and its calibration's spread), no tune")
    args = parser.parse_args()
    results_file = RESULTS / f"{args.results}.json"
    results = json.loads(results_file.read_text()).get("results", {}) if results_file.is_file() else {}
    for name in args.datasets:
        data, work = dataset(name), scratch_dir(f"gptclassify-tune-{name}-")
        print(f"== {name}", flush=True)
        default = one("train", data, work, [], args.model)
        if args.default_only:
            results[name] = {"default": default}
            save(args.results, {"model": args.model or MODEL, "weights": None if args.model else WEIGHTS,
                                "results": results})
            continue
        budget = f"{args.budget_multiple * default['wall_seconds']:.0f}s" if args.budget_multiple else args.budget
        tuned = one("tune", data, work, ["--folds", args.folds, *(["--budget", budget] if budget else [])], args.model)
        tuned["budget"], tuned["budget_multiple"] = budget, args.budget_multiple
        results[name] = {"default": default, "tuned": tuned, "wall_multiple": tuned["wall_seconds"] /
                         default["wall_seconds"], "test_texts_better": round((tuned["test_accuracy"] -
                                                                              default["test_accuracy"]) *
                                                                             default["test_texts"])}
        print(json.dumps(results[name]), flush=True)
        save(args.results, {"model": args.model or MODEL, "weights": None if args.model else WEIGHTS,
                            "folds": args.folds, "budget": args.budget, "budget_multiple": args.budget_multiple,
                            "results": results})


if __name__ == "__main__":
    main()
