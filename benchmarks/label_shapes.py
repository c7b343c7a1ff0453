"""Every label shape on real public data (datasets.py): gptclassify's default recipe with SmolLM2-135M
against a TF-IDF baseline of the same shape and the Hugging Face transformers peer with the same
weights and recipe, by the shape's headline metric, wall time and peak memory.

    ../.venv/bin/python datasets.py debtags vader-tweets simlex lee-pairs conventions spam-assassin-long  # once
    ../.venv/bin/python label_shapes.py                                       # every row (about an hour)
    ../.venv/bin/python label_shapes.py --only conventions                    # one dataset; others kept

debtags: multi-label (micro-F1), a stratified subset of 1,500 / 300 / 600 programs.
debtags-use: the same programs' `use::` tags, a subset of the same size; a label set whose test split
had not been looked at when the threshold rule was chosen (the run's test scores under each rule).
vader-tweets: regression (R², Pearson, Spearman; RMSE in rating points), all 4,200 tweets.
simlex: word pairs, regression (Spearman, SimLex-999's own measure, and R²), all 999 pairs.
lee-pairs: pairs of news articles, regression (Pearson, the Lee set's own measure, Spearman, R²), all
1,225 pairs; the TF-IDF row also gives the untrained cosine of the two texts' vectors, the
classic measure on this set.
conventions: long documents (accuracy, macro-F1), all 189 speeches: our default head+tail at 256
tokens, chunks (windows of 256, up to 4 each), head+tail at 1,024 tokens (the chunks' positions in
one window), and the peer at head+tail 256.
spam-assassin-long: the same on 400 of the 925 training e-mails (seeded sample) and the whole
validation and test splits (133, 264) of the 1,322 long e-mails, with
up to 2 windows of 256 against head+tail at 512 (the time a 2-core machine had).

Each gptclassify row is its own `gptclassify train` process in a fresh feature cache (wall time and
peak RSS are that process's, its frozen pass included); the peer runs in its own process too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, save, scratch_dir
from long_text import pad_batch, peer_fit, peer_model

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
GPTCLASSIFY = str(HERE.parent / ".venv" / "bin" / "gptclassify")
MODEL, WEIGHTS = "smollm2-135m", "smollm2-135m-instruct-gguf"
SPLITS = ("train", "validation", "test")
TASKS = {"debtags": "multi-label", "debtags-use": "multi-label", "vader-tweets": "regression", "simlex": "regression", "lee-pairs": "regression",
         "spam-assassin-long": "single-label", "conventions": "single-label"}
LONG_ROWS = {"default": [], "chunks": ["--truncation", "chunks", "--max-length", "256", "--max-chunks", "4"],
             "head+tail-1024": ["--max-length", "1024"]}
SUBSETS = {"debtags": (1500, 300, 600), "debtags-use": (1500, 300, 600), "spam-assassin-long": (400, 133, 264)}
OURS = {  # rows of gptclassify per dataset: extra train options
    "debtags": {"default": [], "float32-prefix": ["--prefix-dtype", "float32"]}, "debtags-use": {"default": []},
    "vader-tweets": {"default": [], "float32-prefix": ["--prefix-dtype", "float32"]},
    # word pairs: the default, and three recipes a user would try, chosen between by validation
    "simlex": {"default": [], "mean-pooling": ["--pooling", "mean"], "lr-2e-4": ["--lr", "2e-4"],
               "mean-pooling-lr-2e-4": ["--pooling", "mean", "--lr", "2e-4"]},
    "lee-pairs": {"default": []},
    "conventions": LONG_ROWS,
    "spam-assassin-long": {"default": [], "chunks": ["--truncation", "chunks", "--max-length", "256", "--max-chunks", "2"],
                           "head+tail-512": ["--max-length", "512"]},
}


def read(data: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(data / f"{split}.csv", keep_default_na=False, dtype=str)


def subset(name: str) -> Path:
    """The dataset, or a seeded sample of each of its splits (SUBSETS)."""
    full = DATA / name
    if name not in SUBSETS:
        return full
    out = DATA / f"{name}-small"
    if not (out / "dataset.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for split, n in zip(SPLITS, SUBSETS[name]):
            read(full, split).sample(n, random_state=0).to_csv(out / f"{split}.csv", index=False, quoting=1)
        info = json.loads((full / "dataset.json").read_text())
        (out / "dataset.json").write_text(json.dumps({**info, "subset_of": str(full)}, indent=2))
    return out


def targets(df: pd.DataFrame, task: str, labels: list[str]):
    if task == "regression":
        return df["label"].astype(float).to_numpy()
    if task == "multi-label":
        sets = [set(x.split("|")) if x else set() for x in df["label"]]
        return np.array([[float(label in s) for label in labels] for s in sets])
    return np.array([labels.index(y) for y in df["label"]])


def scores(task: str, truth, predicted) -> dict:
    """The shape's metrics: micro/macro-F1 and subset accuracy; R², correlations, RMSE; accuracy, macro-F1."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

    if task == "multi-label":
        return {"micro_f1": f1_score(truth, predicted, average="micro", zero_division=0),
                "macro_f1": f1_score(truth, predicted, average="macro", zero_division=0),
                "subset_accuracy": float((truth == predicted).all(1).mean())}
    if task == "regression":
        return {"r2": r2_score(truth, predicted), "pearson": pearsonr(truth, predicted)[0],
                "spearman": spearmanr(truth, predicted)[0], "rmse": mean_squared_error(truth, predicted) ** 0.5}
    return {"accuracy": accuracy_score(truth, predicted), "macro_f1": f1_score(truth, predicted, average="macro")}


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, list[str]]:
    """Wall seconds, peak RSS (MB) and output lines of one child process (which must succeed)."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith(("frozen pass:", "length:", "epoch ", "    peer")):
            print("   ", line.rstrip()[:200], flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}: failed ({status}):\n{''.join(lines[-20:])}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, lines


def ours(name: str, row: str, data: Path, work: Path, seed: int | None = None) -> dict:
    """One `gptclassify train` of a row (with `seed`: that seed, the row's feature cache shared)."""
    run = work / f"{name}-{row}" if seed is None else work / f"{name}-{row}-seed-{seed}"
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{name}-{row}")}
    cmd = [GPTCLASSIFY, "train", "--data", str(data), "--model", MODEL, "--weights", WEIGHTS, "--out", str(run),
           "--overwrite", *OURS[name][row], *([] if seed is None else ["--seed", str(seed)])]
    wall, rss, lines = measured(cmd, env)
    metrics = json.loads((run / "metrics.json").read_text())
    test, validation = metrics["test"], metrics["validation"]
    task = TASKS[name]
    keep = {"multi-label": ("micro_f1", "macro_f1", "subset_accuracy"), "regression": ("r2", "pearson", "spearman", "rmse"),
            "single-label": ("accuracy", "macro_f1")}[task]
    frozen = next((line.strip() for line in lines if line.startswith("frozen pass:")), "")
    extra = {"at_0.5": at_half(run, data, task), "threshold_rule": validation.get("threshold_rule")} \
        if task == "multi-label" else {}
    return {**{k: test[k] for k in keep}, "validation": {k: validation[k] for k in keep}, "wall_seconds": wall,
            "peak_rss_mb": rss, "frozen_pass": frozen[:300], **extra}


def at_half(run: Path, data: Path, task: str) -> dict:
    """A label-set run's test scores with every threshold at 0.5 (the peer's), beside its own, and
    under each threshold rule fitted on the whole validation split (`by_rule`: what each would have
    given): the saved run, loaded again (not timed)."""
    from gptclassify import Classifier
    from gptclassify.classifier.thresholds import RULES, fit_rule

    classifier = Classifier.load(run)
    labels = classifier.config.labels
    test, validation = read(data, "test"), read(data, "validation")
    probs = classifier.probabilities(list(test["text"])).numpy()
    truth = targets(test, task, labels)
    val_probs = classifier.probabilities(list(validation["text"])).numpy().astype(np.float64)
    val_truth = targets(validation, task, labels) > 0.5
    by_rule = {rule: scores(task, truth, (probs >= np.array(fit_rule(rule, val_probs, val_truth, labels)[0])).astype(float))
               for rule in RULES}
    return {**scores(task, truth, (probs >= 0.5).astype(float)), "by_rule": by_rule}


def tfidf(name: str, data: Path) -> dict:
    """TF-IDF of word 1-2-grams: one-vs-rest linear SVMs (label sets), ridge regression (numbers; for
    pairs, the two texts' vectors side by side), a linear SVM (classes). Reads every word of a text."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    task, info = TASKS[name], json.loads((data / "dataset.json").read_text())
    labels = info.get("labels", [])
    train, test = read(data, "train"), read(data, "test")
    started = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    if "text_pair" in train:
        vec.fit(pd.concat([train["text"], train["text_pair"]]))
        x_train = hstack([vec.transform(train["text"]), vec.transform(train["text_pair"])]).tocsr()
        x_test = hstack([vec.transform(test["text"]), vec.transform(test["text_pair"])]).tocsr()
    else:
        x_train, x_test = vec.fit_transform(train["text"]), vec.transform(test["text"])
    model = {"multi-label": OneVsRestClassifier(LinearSVC()), "regression": Ridge(alpha=1.0),
             "single-label": LinearSVC()}[task]
    model.fit(x_train, targets(train, task, labels))
    got = scores(task, targets(test, task, labels), model.predict(x_test))
    if "text_pair" in test:  # the untrained measure: how alike the two texts' vectors are
        a, b = vec.transform(test["text"]), vec.transform(test["text_pair"])
        cosine = np.asarray(a.multiply(b).sum(1)).ravel()  # rows are L2-normalized
        got["cosine"] = scores(task, targets(test, task, labels), cosine)
    return {**got, "wall_seconds": time.perf_counter() - started}


def peer(name: str, data: Path, epochs: int = 5, batch_size: int = 8, seed: int = 123, cap: int = 256) -> dict:
    """transformers' LlamaForSequenceClassification with the same SmolLM2 weights and token ids (pairs
    joined by the same separator, long texts cut head+tail as our default), our default recipe:
    last block + final norm + a new head trained, AdamW (lr 8e-4, cosine to zero, weight decay 0.1),
    batch 8, 5 epochs; problem_type multi_label_classification (thresholds 0.5, and also
    those our rule chooses on validation, `thresholds.py`) or regression (targets standardized as ours). Every step runs the
    whole network."""
    import torch

    from gptclassify.classifier.thresholds import choose_thresholds

    task, info = TASKS[name], json.loads((data / "dataset.json").read_text())
    labels = info.get("labels", [])
    problem = {"multi-label": "multi_label_classification", "regression": "regression",
               "single-label": "single_label_classification"}[task]
    model, tok = peer_model(1 if task == "regression" else len(labels), problem, seed)

    def encode(split):
        df = read(data, split)
        if "text_pair" in df:
            ids = [tok.fit(tok.encode_raw((a, b), cap), cap) for a, b in zip(df["text"], df["text_pair"])]
        else:
            from gptclassify.data.tokenizer import keep
            ids = [keep(tok.encode(t, cap, "head+tail"), cap, "head+tail", len(tok.prefix)) or [tok.pad_id]
                   for t in df["text"]]
        return ids, targets(df, task, labels)

    def outputs(xs):
        out = []
        with torch.no_grad():
            for b in range(0, len(xs), 32):
                ids, mask = pad_batch(xs[b: b + 32], tok.pad_id)
                out.append(model(input_ids=ids, attention_mask=mask).logits.float())
        return torch.cat(out)

    started = time.perf_counter()
    train_x, train_y = encode("train")
    mean, std = (train_y.mean(), train_y.std()) if task == "regression" else (0.0, 1.0)
    label_of = (lambda y: torch.tensor((y - mean) / std, dtype=torch.float32)) if task == "regression" else \
        (lambda y: torch.tensor(y, dtype=torch.float32)) if task == "multi-label" else torch.tensor
    peer_fit(model, train_x, lambda rows: label_of(train_y[rows]), tok.pad_id, epochs, batch_size, seed, started)
    test_x, test_y = encode("test")
    logits = outputs(test_x)
    if task == "regression":
        return {**scores(task, test_y, logits.reshape(-1).numpy() * std + mean),
                "wall_seconds": time.perf_counter() - started}
    if task == "single-label":
        return {**scores(task, test_y, logits.argmax(-1).numpy()), "wall_seconds": time.perf_counter() - started}
    val_x, val_y = encode("validation")
    thresholds, _, _ = choose_thresholds(torch.sigmoid(outputs(val_x)), torch.tensor(val_y, dtype=torch.float32), labels)
    probs = torch.sigmoid(logits).numpy()
    tuned = scores(task, test_y, (probs >= np.array(thresholds)).astype(float))
    return {**scores(task, test_y, (probs >= 0.5).astype(float)), "tuned_thresholds": tuned,
            "wall_seconds": time.perf_counter() - started}


def peer_process(name: str, seed: int = 123) -> dict:
    """The peer in its own process (its peak memory its own)."""
    wall, rss, lines = measured([sys.executable, __file__, "--peer-in-process", name, "--seeds", str(seed)])
    return {**json.loads(lines[-1]), "process_wall_seconds": wall, "peak_rss_mb": rss}


def token_lengths(data: Path) -> dict:
    from gptclassify.weights import load_tokenizer

    tok = load_tokenizer(WEIGHTS)
    n = np.array([len(tok.encode(t)) for t in read(data, "train")["text"]])
    return {"median": float(np.median(n)), "p90": float(np.percentile(n, 90)), "max": int(n.max()),
            "over_256": float((n > 256).mean()), "over_1024": float((n > 1024).mean())}


HEADLINE = {"multi-label": ("micro_f1", "micro-F1"), "regression": ("r2", "R²"), "single-label": ("accuracy", "accuracy")}
PAIR_HEADLINE = {"simlex": ("spearman", "Spearman"), "lee-pairs": ("pearson", "Pearson")}  # each set's own measure


def table(results: dict) -> str:
    """The measured rows as the markdown table of benchmarks/README.md."""
    lines = ["| dataset | shape | system | headline | test | other test metrics | wall s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        task = rows["task"]
        key, label = PAIR_HEADLINE.get(name, HEADLINE[task])
        for row, r in rows.items():
            if not isinstance(r, dict) or key not in r or " seed " in row:
                continue
            others = ", ".join(f"{k} {r[k]:.4f}" for k in ("macro_f1", "subset_accuracy", "r2", "pearson", "spearman",
                                                            "rmse") if k in r and k != key)
            if "cosine" in r:
                others += f"; untrained cosine: Pearson {r['cosine']['pearson']:.4f}, Spearman {r['cosine']['spearman']:.4f}"
            if "tuned_thresholds" in r:
                others += f"; with validation thresholds micro-F1 {r['tuned_thresholds']['micro_f1']:.4f}"
            if r.get("threshold_rule"):
                others += f"; thresholds by the rule {r['threshold_rule']['rule']} (cross-fitted on validation)"
            if "by_rule" in r.get("at_0.5", {}):
                others += "; test micro-F1 by rule: " + ", ".join(f"{rule} {v['micro_f1']:.4f}"
                                                                   for rule, v in r["at_0.5"]["by_rule"].items())
            elif "at_0.5" in r and r.get("threshold_rule", {}).get("rule") != "0.5":
                others += f"; at thresholds 0.5 micro-F1 {r['at_0.5']['micro_f1']:.4f}"
            seeded = [v[key] for k, v in rows.items() if k.startswith(f"{row} seed ")]
            if seeded:
                others += (f"; {len(seeded)} other seeds: {label} {min(seeded):.4f} to {max(seeded):.4f} "
                           f"(mean {np.mean(seeded):.4f})")
            system = {"tfidf": "TF-IDF + linear", "peer": "transformers peer"}.get(row, f"gptclassify {row}")
            wall = r.get("process_wall_seconds", r.get("wall_seconds"))
            rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
            lines.append(f"| {name} | {task}{' pairs' if name in PAIR_HEADLINE else ''} | {system} | {label} | "
                         f"{r[key]:.4f} | {others} | {wall:.0f} | {rss} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="store_true", help="print the measured rows as markdown")
    parser.add_argument("--only", nargs="+", choices=sorted(TASKS), help="these datasets; the others' rows are kept")
    parser.add_argument("--rows", nargs="+", help="of each dataset, only these rows: tfidf, peer, lengths, or "
                                                   "gptclassify's (default, chunks, head+tail-1024)")
    parser.add_argument("--seeds", nargs="+", type=int, help="gptclassify's rows (`train --seed`, from the row's "
                        "feature cache) or the peer's again with each of these seeds: the spread a seed makes")
    parser.add_argument("--peer-in-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table(json.loads((RESULTS / "label_shapes.json").read_text())["results"]))
        return
    if args.peer_in_process:
        print(json.dumps(peer(args.peer_in_process, subset(args.peer_in_process), seed=(args.seeds or [123])[0])))
        return
    previous = RESULTS / "label_shapes.json"
    results = json.loads(previous.read_text()).get("results", {}) if previous.is_file() else {}
    work = scratch_dir("gptclassify-shapes-")
    for name in args.only or list(TASKS):
        if not (DATA / name / "dataset.json").is_file():
            sys.exit(f"run `../.venv/bin/python datasets.py {name}` first")
        data = subset(name)
        rows = args.rows or ["lengths", "tfidf", *OURS[name], "peer"]
        for row in rows:
            print(f"== {name}: {row}", flush=True)
            if row == "lengths":
                got = token_lengths(data)
            elif row == "tfidf":
                got = tfidf(name, data)
            elif args.seeds and (row == "peer" or row in OURS[name]):
                for seed in args.seeds:
                    print(f"== {name}: {row}, seed {seed}", flush=True)
                    results.setdefault(name, {"task": TASKS[name], "data": str(data)})[f"{row} seed {seed}"] = \
                        peer_process(name, seed) if row == "peer" else ours(name, row, data, work, seed)
                    save("label_shapes", {"weights": WEIGHTS, "model": MODEL, "results": results})
                continue
            elif row == "peer":
                got = peer_process(name)
            elif row in OURS[name]:
                got = ours(name, row, data, work)
            else:
                continue
            results.setdefault(name, {"task": TASKS[name], "data": str(data)})[row] = got
            print(json.dumps(got), flush=True)
            save("label_shapes", {"weights": WEIGHTS, "model": MODEL, "results": results})


if __name__ == "__main__":
    main()
