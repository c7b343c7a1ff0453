"""The cross-validation table of benchmarks/README.md from `recipe_cv.py`'s saved results: one row per
dataset, trainable part, tokens kept and rate, one column per epoch rule (held-out accuracy over all folds), the
best of each dataset in bold.

    python cv_table.py sms=recipe_cv_sms rotten-tomatoes=recipe_cv_rotten_tomatoes,recipe_cv_rotten_tomatoes_high ...
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS
from recipe_cv import RULES

# what runs made before recipe_cv.py recorded their tokens kept: gptclassify's default of then, the
# longest text within 256 tokens, head truncation
EARLIER_DEFAULT = "≤256 head"


def rows_of(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"cv_table.py: {path}: no such result (recipe_cv.py --save-as {name} writes it)")
        saved = json.loads(path.read_text())
        for row in saved["results"]:
            kept = f"{row['max_length']} {row['truncation']}" if row.get("max_length") else EARLIER_DEFAULT
            rows.append({**row, "trainable": row.get("trainable", "last-block"), "kept": kept})
    return rows


def table(datasets: dict[str, list[dict]]) -> str:
    header = ["dataset", "trainable", "tokens", "rate", *RULES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, rows in datasets.items():
        best = max(r["accuracy"] for r in rows)
        cells = {(r["trainable"], r["kept"], r["lr"], r["rule"]): r["accuracy"] for r in rows}
        recipes = {(r["trainable"], r["kept"], r["lr"]) for r in rows}
        recipes = sorted(recipes, key=lambda t: (t[0] != "last-block", t[0], t[1] != EARLIER_DEFAULT, t))
        for recipe in recipes:
            accuracies = [cells.get((*recipe, rule)) for rule in RULES]
            shown = ["" if a is None else f"**{a:.2%}**" if a == best else f"{a:.2%}" for a in accuracies]
            trainable, kept, lr = recipe
            lines.append(f"| {dataset} | {trainable} | {kept} | {lr:g} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="DATASET=RESULT[,RESULT...] (names under results/)")
    args = parser.parse_args()
    datasets = {}
    for spec in args.datasets:
        dataset, _, names = spec.partition("=")
        if not names:
            parser.error(f"{spec!r}: expected DATASET=RESULT[,RESULT...]")
        datasets[dataset] = rows_of(names.split(","))
    print(table(datasets))


if __name__ == "__main__":
    main()
