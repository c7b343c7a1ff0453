"""The report's page: one HTML file with its figures inside (PNG as data: URIs), its style inline,
and nothing loaded from anywhere; every text from the data or the run is escaped."""

from __future__ import annotations

import base64
import io
from html import escape

from ..classifier.calibration import reliability_bins
from ..classifier.thresholds import described
from ..files import atomic_path
from .report import ReportData, confident_mistakes, coverage_curve, coverage_table

STYLE = """body{font:14px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td.t,th.t{text-align:left;max-width:560px;white-space:pre-wrap;word-break:break-word}
.better{color:#0a6b2d;font-weight:600}.worse{color:#a11}img{max-width:100%}.note{color:#666}"""


def figure(draw) -> str:
    """An <img> of what `draw(ax)` plots, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def table(header: list[str], rows: list[list], text_columns: tuple[int, ...] = (0,)) -> str:
    cell = lambda i, v, tag: f'<{tag}{" class=t" if i in text_columns else ""}>{escape(fmt(v))}</{tag}>'  # noqa: E731
    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def recipe_section(data: ReportData) -> str:
    c = data.classifier.config
    t = c.training
    rows = [["model", f"{c.model_name} ({c.weights})"], ["task", c.task], ["labels", ", ".join(c.labels)],
            ["trainable", f"{t.trainable} ({c.trainable_parameters or 0:,} of {c.total_parameters or 0:,} parameters)"],
            ["recipe", f"lr {t.lr}, {t.lr_schedule}, {t.epochs} epochs, batch {t.batch_size}, seed {t.seed}"],
            ["length", f"{c.policy.max_length} tokens, {c.policy.truncation} truncation, {c.policy.pooling} pooling"],
            ["calibration", "none" if c.temperature is None else
             f"temperature fitted on {(c.tuning or {}).get('temperature_fitted_on') or 'the validation split'}"],
            ["data", str(data.data_dir)],
            ["scored on", f"the {data.split} split: {len(data.texts):,} texts"]]
    if data.tuning:
        rows.append(["tuned", "yes: the recipe won the cross-validation below"])
    if (c.tuning or {}).get("trained_on"):
        rows.append(["trained on", c.tuning["trained_on"] + (" (these scores are not held out)"
                                                             if data.split != "test" else "")])
    return "<h2 id=recipe>Recipe and data</h2>" + table(["", ""], rows, (0, 1))


def curves_section(data: ReportData) -> str:
    epochs, evals = data.history.get("epochs", []), data.history.get("eval", [])
    if not epochs and not evals:
        return "<h2 id=curves>Training</h2><p class=note>no history.json in the run</p>"
    metric = epochs[0].get("metric", "accuracy") if epochs else "accuracy"

    def losses(ax):
        for key, style in (("train_loss", "-"), ("val_loss", "-.")):
            if any(key not in p for p in evals):  # tune's winner: no validation split held out
                continue
            ax.plot([p["examples_seen"] for p in evals], [p[key] for p in evals], style, label=key.replace("_", " "))
        ax.set_xlabel("examples seen"), ax.set_ylabel("loss"), ax.legend()

    def scores(ax):
        for key, style in (("train_accuracy", "-o"), ("val_accuracy", "-.o")):
            if any(key not in p for p in epochs):
                continue
            ax.plot([p["epoch"] for p in epochs], [p[key] for p in epochs], style,
                    label=("train " if key.startswith("train") else "validation ") + metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch"), ax.set_ylabel(metric), ax.legend()

    return "<h2 id=curves>Training</h2>" + (figure(losses) if evals else "") + (figure(scores) if epochs else "")


def classes_section(data: ReportData) -> str:
    scored = data.scored
    if data.task == "regression":
        def scatter(ax):
            ax.scatter(data.targets.tolist(), data.probs.reshape(-1).tolist(), s=6, alpha=0.5)
            lo, hi = float(data.targets.min()), float(data.targets.max())
            ax.plot([lo, hi], [lo, hi], "k:", linewidth=1)
            ax.set_xlabel("true value"), ax.set_ylabel("predicted value")

        rows = [[k.upper() if len(k) < 5 else k, scored[k]] for k in ("rmse", "mae", "r2", "pearson", "spearman")]
        return "<h2 id=classes>Errors</h2>" + table(["", data.split], rows) + figure(scatter)
    if data.task == "multi-label":
        return labels_section(data)
    rows = [[label, c["precision"], c["recall"], c["f1"], c["support"]] for label, c in scored["per_class"].items()]
    return ("<h2 id=classes>Per class</h2>" + table(["", data.split], [["accuracy", scored["accuracy"]],
                                                                       ["macro-F1", scored["macro_f1"]]])
            + table(["label", "precision", "recall", "F1", "support"], rows))


def labels_section(data: ReportData) -> str:
    """A label set's scores, each label's at its threshold, and the rule that chose the thresholds."""
    scored = data.scored
    rows = [[label, c["precision"], c["recall"], c["f1"], c["support"], c["threshold"]]
            for label, c in scored["per_label"].items()]
    head = [["micro-F1", scored["micro_f1"]], ["macro-F1", scored["macro_f1"]], ["subset accuracy", scored["subset_accuracy"]]]
    rule = data.metrics.get("validation", {}).get("threshold_rule")
    said = f"<p>Thresholds: the rule {escape(described(rule))}.</p>" if rule else ""
    return ("<h2 id=classes>Per label</h2>" + table(["", data.split], head) + said
            + table(["label", "precision", "recall", "F1", "support", "threshold"], rows))


def confusion_section(data: ReportData) -> str:
    if data.task != "single-label":
        return ""
    labels, matrix = data.classifier.labels, data.scored["confusion_matrix"]
    rows = [[f"true {label}", *row] for label, row in zip(labels, matrix)]
    return "<h2 id=confusion>Confusion matrix</h2>" + table(["", *[f"predicted {x}" for x in labels]], rows)


def calibration_section(data: ReportData) -> str:
    if data.task == "regression":
        return ""
    cal, temperature = data.scored["calibration"], data.classifier.config.temperature

    def reliability(ax):  # a bin's marker area follows its texts: a bin of one text is a dot, not a verdict
        for name, t, style in (("before", None, "--"), ("after", temperature, "-")):
            xs, ys, counts = zip(*reliability_bins(data.probs_with(t), data.targets))
            line, = ax.plot(xs, ys, style, linewidth=1, label=f"{name} calibration")
            ax.scatter(xs, ys, s=[8 + 300 * n / sum(counts) for n in counts], color=line.get_color())
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
        ax.set_xlabel("score (marker area: texts in the bin)"), ax.set_ylabel("share right"), ax.legend()

    shown = f"{temperature:.3f}" if isinstance(temperature, float) else \
        ", ".join(f"{t:.2f}" for t in temperature) if temperature else "none (too few validation texts)"
    rows = [["temperature", "1", shown], ["expected calibration error", cal["ece_before"], cal["ece"]],
            ["Brier score", cal["brier_before"], cal["brier"]],
            ["negative log-likelihood", cal["nll_before"], cal["nll"]]]
    return ("<h2 id=calibration>Are the scores probabilities?</h2>" + table(["", "before", "after"], rows)
            + figure(reliability))


def coverage_section(data: ReportData) -> str:
    if data.task != "single-label":
        return ""
    xs, ys = coverage_curve(data.probs, data.targets)

    def draw(ax):
        ax.plot(xs, ys)
        ax.set_xlabel("share of texts answered (the most confident first)"), ax.set_ylabel("accuracy")

    rows = [[f"{r['coverage']:.0%}", r["accuracy"], r["min_score"]] for r in coverage_table(data.probs, data.targets)]
    return ("<h2 id=coverage>Accuracy when unsure texts go to a person</h2><p>With <code>predict --min-score P</code>, "
            "texts scored under P are left unlabelled.</p>" + table(["answered", "accuracy", "--min-score"], rows)
            + figure(draw))


def mistakes_section(data: ReportData) -> str:
    """The mistakes with their texts, and the file of each where the data came from a folder."""
    mistakes = confident_mistakes(data)
    rows = [[" ‖ ".join(m["text"]) if isinstance(m["text"], tuple) else m["text"], m["truth"], m["predicted"],
             m["score"]] for m in mistakes]
    what = "largest errors" if data.task == "regression" else "most confident mistakes"
    head = ["text", "true", "predicted", "error" if data.task == "regression" else "score"]
    if data.files:
        rows = [[data.files[m["index"]], *row] for m, row in zip(mistakes, rows)]
        head = ["file", *head]
    shown = table(head, rows, (0, 1, 2, 3) if data.files else (0, 1, 2))
    return f"<h2 id=mistakes>The {what}</h2>" + (shown if rows else "<p>none</p>")


def tuning_section(data: ReportData) -> str:
    if not data.tuning:
        return ""
    rows = [[r["recipe"], r["mean"], r["std"], r.get("folds", "")] for r in data.tuning.get("recipes", [])]
    return ("<h2 id=tuning>Tuning</h2>" + f"<p>{escape(data.tuning.get('summary', ''))}</p>"
            + table(["recipe", "mean", "spread", "folds"], rows))


def baseline_section(data: ReportData) -> str:
    base = data.baseline
    if isinstance(base, str):
        return f"<h2 id=baseline>Against a TF-IDF baseline</h2><p class=note>{escape(base)}</p>"
    keys = {"single-label": ("accuracy", "macro_f1"), "multi-label": ("micro_f1", "macro_f1", "subset_accuracy"),
            "regression": ("r2", "pearson", "spearman", "rmse")}[data.task]
    lower_better = {"rmse"}
    rows = []
    for k in keys:
        ours, theirs = data.scored[k], base[k]
        better = (ours < theirs) if k in lower_better else (ours > theirs)
        rows.append([k, ours, theirs, "run" if better else "baseline" if ours != theirs else "tie"])
    return ("<h2 id=baseline>Against a TF-IDF baseline</h2><p>TF-IDF of word 1-2-grams and a linear model, "
            f"trained on the same training split and scored on the same {escape(data.split)} split "
            f"({base['seconds']:.1f} s).</p>" + table(["", "this run", "TF-IDF", "better"], rows))


SECTIONS = (recipe_section, curves_section, classes_section, confusion_section, calibration_section,
            coverage_section, mistakes_section, tuning_section, baseline_section)


def write_report(data: ReportData) -> str:
    """RUN/report.html, written atomically; its path."""
    title = f"gptclassify report: {data.run_dir.name}"
    body = "".join(section(data) for section in SECTIONS)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")
    path = data.run_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)  # a page to share
    return str(path)
