"""`gptclassify report RUN`: what a run does, in one self-contained HTML file (`RUN/report.html`):
the recipe and the data, the training curves, each class's precision, recall and F1, the confusion
matrix, the reliability of its scores before and after calibration, the accuracy it keeps when the
unsure texts go to a person, its most confident mistakes, the tuning table when it was tuned, and a
TF-IDF baseline trained and scored on the same splits beside it.

This file computes; `report_html.py` draws and writes.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..classifier.calibration import calibrated
from ..classifier.metrics import classification_report, logits_report
from ..classifier.tasks import in_target_units, multi_label_report, probabilities, regression_report, standardize
from ..data.splits import SPLITS, dataset_info, load_data_split, read_split
from ..errors import UserError
from ..files import read_json
from .baseline import SKLEARN_MISSING, tfidf_baseline
from .predict import Classifier

MISTAKES_SHOWN = 12
COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


@dataclass
class ReportData:
    run_dir: Path
    data_dir: Path
    split: str
    classifier: Classifier
    metrics: dict  # the run's metrics.json
    history: dict
    tuning: dict | None
    texts: list
    targets: torch.Tensor  # class ids, 0/1 rows, or numbers in the target's units
    logits: torch.Tensor  # raw, before the temperature
    scored: dict  # the split's metrics computed now (logits_report)
    baseline: dict | str  # the TF-IDF baseline's metrics, or why there are none
    files: list[str] | None = None  # the file each text came from (`prepare folder`'s splits), else None

    @property
    def task(self) -> str:
        return self.classifier.task

    @property
    def probs(self) -> torch.Tensor:
        """Calibrated scores (regression: values in the target's units)."""
        return self.probs_with(self.classifier.config.temperature)

    def probs_with(self, temperature) -> torch.Tensor:
        out = probabilities(self.task, calibrated(self.logits, temperature))
        return in_target_units(out, self.classifier.config.target_scale) if self.task == "regression" else out


def gather(run_dir: Path, data_dir: Path | None = None, split: str = "test", device: str = "auto",
           log=print) -> ReportData:
    """Everything the report shows: the run's files, and its outputs on one split of the data."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}")
    clf = Classifier.load(run_dir, device)
    config = clf.config
    data_dir = Path(data_dir or config.data.get("dir") or "")
    if not (data_dir / "dataset.json").is_file():
        raise UserError(f"{data_dir}: no prepared data there (the run's own data moved?); give --data DIR")
    task, _, separator = dataset_info(data_dir)
    if task != clf.task:
        raise UserError(f"{data_dir} holds {task} data; the run was trained for {clf.task}")
    texts, raw_targets = load_data_split(data_dir, split, clf.labels, task, separator)
    log(f"report: {len(texts):,} {split} texts through the run")
    logits = clf.logits(texts)
    targets = torch.tensor(raw_targets, dtype=torch.float32 if task != "single-label" else torch.long)
    standardized = torch.tensor(standardize(targets.tolist(), config.target_scale)) if task == "regression" \
        else targets
    scored = logits_report(logits, standardized, clf.labels, task, config.thresholds, config.target_scale,
                           config.training.loss == "huber", config.temperature)
    extra = [read_json(run_dir / name) if (run_dir / name).is_file() else None
             for name in ("metrics.json", "history.json", "tuning.json")]
    baseline = baseline_metrics(data_dir, (texts, raw_targets), clf, task, separator, targets, log)
    split_table = read_split(data_dir, split)
    files = split_table["file"].tolist() if "file" in split_table else None
    return ReportData(Path(run_dir), data_dir, split, clf, extra[0] or {}, extra[1] or {}, extra[2], texts, targets,
                      logits, scored, baseline, files)


def baseline_metrics(data_dir: Path, test: tuple[list, list], clf: Classifier, task: str, separator: str, targets,
                     log) -> dict | str:
    """The TF-IDF baseline's metrics on the report's split (`test`: its texts and targets as read,
    `targets` as a tensor), or why there are none."""
    if importlib.util.find_spec("sklearn") is None:
        return SKLEARN_MISSING
    splits = trained_on(clf.config)
    parts = [load_data_split(data_dir, s, clf.labels, task, separator) for s in splits]
    train = ([t for texts, _ in parts for t in texts], [y for _, ys in parts for y in ys])
    log(f"report: the TF-IDF baseline on the same training data ({' and '.join(splits)} split{'s' * (len(splits) > 1)})")
    got = tfidf_baseline(train, test, task, clf.labels)
    predicted = got["predicted"]
    if task == "multi-label":
        report = multi_label_report(torch.tensor(predicted, dtype=torch.float32), targets, clf.labels,
                                    [0.5] * len(clf.labels), float("nan"))
    elif task == "regression":
        report = regression_report(torch.tensor(predicted, dtype=torch.float64), targets.double(), float("nan"))
    else:
        report = classification_report(targets.numpy(), predicted, clf.labels)
    return {**report, "seconds": got["seconds"]}


def trained_on(config) -> tuple[str, ...]:
    """The splits a run trained on: the training split, and the validation split too for tune's winner."""
    return ("train", "validation") if (config.tuning or {}).get("trained_on") else ("train",)


def ranked_by_score(probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-label: the top scores, highest first, and whether each of those texts was right."""
    top, predicted = probs.max(-1)
    order = torch.argsort(top, descending=True)
    return top[order], (predicted == targets)[order].double()


def coverage_table(probs: torch.Tensor, targets: torch.Tensor) -> list[dict]:
    """Single-label: the accuracy on the most confident share of the texts, and the --min-score that keeps it."""
    top, right = ranked_by_score(probs, targets)
    rows = []
    for share in COVERAGES:
        k = max(1, math.ceil(share * len(top)))
        rows.append({"coverage": k / len(top), "accuracy": right[:k].mean().item(), "min_score": top[k - 1].item()})
    return rows


def coverage_curve(probs: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[float]]:
    """The share answered and its accuracy, as the --min-score bar falls past each text."""
    _, right = ranked_by_score(probs, targets)
    kept = torch.arange(1, len(right) + 1, dtype=torch.float64)
    return (kept / len(right)).tolist(), (right.cumsum(0) / kept).tolist()


def confident_mistakes(data: ReportData) -> list[dict]:
    """The wrong answers the run was surest of (regression: its largest errors)."""
    probs, targets, labels = data.probs, data.targets, data.classifier.labels
    if data.task == "regression":
        error = (probs.reshape(-1) - targets).abs()
        worst = torch.argsort(error, descending=True)[:MISTAKES_SHOWN]
        return [{"index": i, "text": data.texts[i], "truth": f"{targets[i].item():.4g}",
                 "predicted": f"{probs[i, 0].item():.4g}", "score": error[i].item()} for i in worst.tolist()]
    if data.task == "multi-label":
        thresholds = torch.tensor(data.classifier.config.thresholds or [0.5] * len(labels))
        chosen = probs >= thresholds
        wrong = (chosen != (targets > 0.5)).any(1)
        sureness = torch.where(chosen != (targets > 0.5), (probs - 0.5).abs(), torch.zeros_like(probs)).max(1).values
        name = lambda row: ", ".join(label for label, on in zip(labels, row) if on) or "(none)"  # noqa: E731
        order = [i for i in torch.argsort(sureness, descending=True).tolist() if wrong[i]][:MISTAKES_SHOWN]
        return [{"index": i, "text": data.texts[i], "truth": name((targets[i] > 0.5).tolist()),
                 "predicted": name(chosen[i].tolist()),
                 "score": sureness[i].item() + 0.5} for i in order]
    top, predicted = probs.max(-1)
    order = [i for i in torch.argsort(top, descending=True).tolist() if predicted[i] != targets[i]][:MISTAKES_SHOWN]
    return [{"index": i, "text": data.texts[i], "truth": labels[targets[i]], "predicted": labels[predicted[i]],
             "score": top[i].item()} for i in order]
