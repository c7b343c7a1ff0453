"""What the temperature did to a run's test split, with its spread: the expected calibration error,
the Brier score and the negative log-likelihood before and after, and a paired bootstrap (the same
resampled texts scored both ways) of each change. On a few hundred texts with a handful of
mistakes a text moving from one of ECE's 15 bins to the next moves it by a few thousandths, so a
change in ECE means something only where its interval excludes 0.

    ../.venv/bin/python calibration_spread.py RUN DATA        # used by tune_vs_default.py on each run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from gptclassify import Classifier
from gptclassify.classifier.calibration import brier_score, expected_calibration_error, nll

RESAMPLES = 2000


def test_logits(run: Path, data: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The test split's logits before the temperature, its class ids and the run's temperature."""
    clf = Classifier.load(run, device="cpu")
    df = pd.read_csv(Path(data) / "test.csv", keep_default_na=False, dtype=str)
    targets = torch.tensor([clf.labels.index(label) for label in df["label"]])
    return clf.logits(df["text"].tolist()).double(), targets, clf.config.temperature


def scores(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    probs = torch.softmax(logits, -1)
    return {"ece": expected_calibration_error(probs, targets), "brier": brier_score(probs, targets),
            "nll": nll(logits, targets, 1.0)}


def spread(run: Path, data: Path, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Each score before and after, and the 95% interval of (after - before) over paired resamples."""
    logits, targets, temperature = test_logits(run, data)
    before, after = scores(logits, targets), scores(logits / temperature, targets)
    generator, changes = torch.Generator().manual_seed(seed), {k: [] for k in before}
    for _ in range(resamples):
        pick = torch.randint(len(targets), (len(targets),), generator=generator)
        b, a = scores(logits[pick], targets[pick]), scores(logits[pick] / temperature, targets[pick])
        for k in changes:
            changes[k].append(a[k] - b[k])
    out = {"temperature": temperature, "texts": len(targets), "resamples": resamples}
    for k, values in changes.items():
        low, high = torch.tensor(values, dtype=torch.float64).quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        out[k] = {"before": before[k], "after": after[k], "change_95": [low, high],
                  "share_of_resamples_lower": sum(v < 0 for v in values) / resamples}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    print(json.dumps(spread(args.run, args.data), indent=1))


if __name__ == "__main__":
    main()
