"""The label shapes a data directory can hold, and how each is read and split.

  single-label  one class per text (the book's)
  multi-label   a set of classes per text, possibly empty: `billing|refund` in a CSV cell (the
                separator is the user's), or a JSON list in JSONL
  regression    one number per text (a star rating, a score)

Every label is checked where it is read, and a bad one refused in one line naming the file, the
line and the column. Splits are stratified for each shape: by class, by each label of a set (the
rarest first, so that rare labels reach every split where they can), by quantile of the target.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError

TASKS = ("single-label", "multi-label", "regression")
SPLIT_NAMES = ("train", "validation", "test")


def parse_label_cell(path: Path, line: int, column: str, value, task: str, separator: str):
    """One row's label as its task reads it: a class name, a sorted list of class names, a float."""
    if task == "regression":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{path}: line {line}, column {column!r}: not a number: {str(value)[:40]!r}") from None
        if not math.isfinite(number):
            raise UserError(f"{path}: line {line}, column {column!r}: not a finite number: {value!r}")
        return number
    if task == "multi-label":
        names = value if isinstance(value, list) else str(value).split(separator)
        names = [n.strip() for n in names]
        for n in names:
            if isinstance(value, list) and separator in n:
                raise UserError(f"{path}: line {line}, column {column!r}: label {n!r} holds the separator "
                                f"{separator!r}; choose another with --label-separator")
        return sorted({n for n in names if n})
    if not str(value).strip():
        raise UserError(f"{path}: line {line}, column {column!r}: empty label")
    return value


def multi_label_split(df: pd.DataFrame, labels: list[str], val_frac: float, test_frac: float,
                      seed: int) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Iterative stratification (Sechidis et al., 2011): texts of the rarest label first, each to
    the split that most lacks that label (ties: the split furthest below its size). Returns the
    splits and a note per label that could not reach every split."""
    rng = np.random.default_rng(seed)
    fracs = {"train": 1 - val_frac - test_frac, "validation": val_frac, "test": test_frac}
    order = rng.permutation(len(df))
    sets = [set(df["label"].iloc[i]) for i in range(len(df))]
    wanted_size = {s: f * len(df) for s, f in fracs.items()}
    wanted = {s: {label: f * sum(label in t for t in sets) for label in labels} for s, f in fracs.items()}
    placed: dict[str, list[int]] = {s: [] for s in SPLIT_NAMES}
    left = list(order)
    while left:
        remaining = {label: sum(label in sets[i] for i in left) for label in labels}
        present = [label for label in labels if remaining[label]]
        if not present:  # texts without a label: by size alone
            for i in left:
                target = max(SPLIT_NAMES, key=lambda s: (wanted_size[s], s == "train"))
                placed[target].append(i)
                wanted_size[target] -= 1
            break
        rarest = min(present, key=lambda label: (remaining[label], label))
        for i in [i for i in left if rarest in sets[i]]:
            target = max(SPLIT_NAMES, key=lambda s: (wanted[s][rarest], wanted_size[s], s == "train"))
            placed[target].append(i)
            wanted_size[target] -= 1
            for label in sets[i]:
                wanted[target][label] -= 1
        left = [i for i in left if rarest not in sets[i]]
    position = {int(i): k for k, i in enumerate(order)}  # each split in the shuffled order
    splits = {s: df.iloc[sorted(placed[s], key=position.__getitem__)].reset_index(drop=True) for s in SPLIT_NAMES}
    notes = [f"label {label!r} ({sum(label in t for t in sets)} texts) is missing from the "
             + " and ".join(s for s in SPLIT_NAMES if not any(label in t for t in splits[s]["label"])) + " split"
             for label in labels if any(not any(label in t for t in splits[s]["label"]) for s in SPLIT_NAMES)]
    return splits, notes


def regression_split(df: pd.DataFrame, val_frac: float, test_frac: float, seed: int) -> dict[str, pd.DataFrame]:
    """Stratified by quantile of the target (up to 10 bins), so every split spans its range."""
    rng = np.random.default_rng(seed)
    bins = pd.qcut(df["label"].rank(method="first"), q=min(10, max(1, len(df) // 10)), labels=False)
    parts: dict[str, list] = {s: [] for s in SPLIT_NAMES}
    for b in sorted(set(bins)):
        rows = df[bins == b]
        order = rng.permutation(len(rows))
        n_test, n_val = int(round(len(rows) * test_frac)), int(round(len(rows) * val_frac))
        parts["test"].append(rows.iloc[order[:n_test]])
        parts["validation"].append(rows.iloc[order[n_test:n_test + n_val]])
        parts["train"].append(rows.iloc[order[n_test + n_val:]])
    return {s: pd.concat(p).sample(frac=1, random_state=seed).reset_index(drop=True) for s, p in parts.items()}


def target_summary(values) -> dict:
    v = np.asarray(list(values), dtype=float)
    return {"count": int(len(v)), "mean": float(v.mean()) if len(v) else None, "std": float(v.std()) if len(v) else None,
            "min": float(v.min()) if len(v) else None, "max": float(v.max()) if len(v) else None}
