"""Long texts: the SpamAssassin corpus (median about 300 tokens) with SmolLM2-135M-Instruct (real
weights), at two or three length caps and three truncation policies, against a TF-IDF + linear SVM
baseline and the Hugging Face transformers peer doing our default recipe with the same truncation.

    ../.venv/bin/python datasets.py spam-assassin            # once: the pinned download and split
    ../.venv/bin/python long_text.py                          # every row (about an hour on 2 cores)
    ../.venv/bin/python long_text.py --only head-128 peer     # some rows; earlier rows are kept

Each gptclassify row is its own `gptclassify train` process (wall time and peak RSS are that
process's), in a fresh feature cache, so every row pays its frozen pass. The subset (400 train,
100 validation, 400 test, stratified, seed 0) keeps the hour; TF-IDF also runs on the full split.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from common import RESULTS, save, scratch_dir

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
GPTCLASSIFY = str(HERE.parent / ".venv" / "bin" / "gptclassify")
MODEL, WEIGHTS = "smollm2-135m", "smollm2-135m-instruct-gguf"


def model_args(model: str | None) -> list[str]:
    """`--model` for another model (a name, hub id or .gguf), else SmolLM2-135M with its GGUF's weights."""
    return ["--model", model] if model else ["--model", MODEL, "--weights", WEIGHTS]

ROWS = {f"{t}-{c}": (t, c) for c in (128, 256, 512) for t in ("head", "tail", "head+tail")}
DEFAULT_ROWS = ["head-128", "tail-128", "head+tail-128", "head-256", "tail-256", "head+tail-256", "head-512"]


def subset(full: Path, out: Path, sizes=(400, 100, 400), seed: int = 0) -> Path:
    """A stratified sample of the prepared split (each split sampled from its own file)."""
    if (out / "dataset.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), sizes):
        df = pd.read_csv(full / f"{split}.csv", keep_default_na=False, dtype=str)
        frac = n / len(df)
        picked = pd.concat([g.sample(round(len(g) * frac), random_state=seed) for _, g in df.groupby("label")])
        picked.sample(frac=1, random_state=seed).to_csv(out / f"{split}.csv", index=False, quoting=1)
    info = json.loads((full / "dataset.json").read_text())
    info["subset_of"] = str(full)
    (out / "dataset.json").write_text(json.dumps(info, indent=2))
    return out


def measured(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit status of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith(("frozen pass:", "length:", "feature cache:", "tune:", "calibration:")):
            print("   ", line.rstrip()[:160], flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, status


def json_child(cmd: list[str]) -> dict:
    """The JSON object a child process prints last, with its wall seconds and peak RSS (MB)."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = list(child.stdout)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])}: failed ({status})")
    row = json.loads(out[-1])
    row.update(wall_seconds=time.perf_counter() - started, peak_rss_mb=usage.ru_maxrss / 1024)
    return row


def ours(name: str, data: Path, work: Path) -> dict:
    truncation, cap = ROWS[name]
    run = work / name
    env = {**os.environ, "GPTCLASSIFY_FEATURE_CACHE": str(work / f"cache-{name}")}
    cmd = [GPTCLASSIFY, "train", "--data", str(data), "--model", MODEL, "--weights", WEIGHTS, "--out", str(run),
           "--overwrite", "--max-length", str(cap), "--truncation", truncation]
    wall, rss, status = measured(cmd, env)
    if status != 0:
        raise SystemExit(f"{name}: train failed ({status})")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"truncation": truncation, "max_length": cap, "test_accuracy": metrics["test"]["accuracy"],
            "test_macro_f1": metrics["test"]["macro_f1"], "validation_accuracy": metrics["validation"]["accuracy"],
            "wall_seconds": wall, "peak_rss_mb": rss, "training_seconds": metrics["training"]["seconds"]}


def tfidf(data: Path) -> dict:
    """TF-IDF of word 1-2-grams + a linear SVM, on whole texts (it reads every word)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    read = {s: pd.read_csv(data / f"{s}.csv", keep_default_na=False, dtype=str) for s in ("train", "test")}
    started = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), LinearSVC(C=1.0))
    model.fit(read["train"]["text"], read["train"]["label"])
    predicted = model.predict(read["test"]["text"])
    return {"test_accuracy": accuracy_score(read["test"]["label"], predicted),
            "test_macro_f1": f1_score(read["test"]["label"], predicted, average="macro"),
            "wall_seconds": time.perf_counter() - started}


def peer(data: Path, truncation: str, cap: int, epochs: int = 5, batch_size: int = 8, seed: int = 123) -> dict:
    """transformers' LlamaForSequenceClassification with the same SmolLM2 weights and tokens, our
    default recipe: last block + final norm + a new head trained, AdamW (lr 8e-4, cosine to zero,
    weight decay 0.1), batch 8, 5 epochs, the last real token read; every step runs the whole network."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from gptclassify.data.tokenizer import keep

    labels = sorted(pd.read_csv(data / "train.csv", keep_default_na=False, dtype=str)["label"].unique())
    model, tok = peer_model(len(labels), seed=seed)

    def encode(split):
        df = pd.read_csv(data / f"{split}.csv", keep_default_na=False, dtype=str)
        return [keep(tok.encode(t, cap, truncation), cap, truncation) or [tok.pad_id] for t in df["text"]], \
            [labels.index(y) for y in df["label"]]

    started = time.perf_counter()
    train_x, train_y = encode("train")
    peer_fit(model, train_x, lambda rows: torch.tensor([train_y[i] for i in rows]), tok.pad_id, epochs, batch_size,
             seed, started)
    test_x, test_y = encode("test")
    predicted = []
    with torch.no_grad():
        for b in range(0, len(test_x), 32):
            ids, mask = pad_batch(test_x[b: b + 32], tok.pad_id)
            predicted += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    return {"truncation": truncation, "max_length": cap, "test_accuracy": accuracy_score(test_y, predicted),
            "test_macro_f1": f1_score(test_y, predicted, average="macro"), "wall_seconds": time.perf_counter() - started}


def peer_model(num_labels: int, problem_type: str | None = None, seed: int = 123):
    """transformers' LlamaForSequenceClassification holding our SmolLM2 weights (its new head drawn
    from `seed`), frozen but for the last block, the final norm and the head; and our tokenizer."""
    import torch
    import transformers

    from gptclassify.weights import load_pretrained, load_tokenizer

    ours_model, tok = load_pretrained(WEIGHTS), load_tokenizer(WEIGHTS)
    c = ours_model.cfg
    hf_cfg = transformers.LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.emb_dim, intermediate_size=c.hidden_dim,
                                      num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                                      num_key_value_heads=c.n_kv_heads, rope_theta=c.rope_base, rms_norm_eps=c.norm_eps,
                                      max_position_embeddings=c.context_length, tie_word_embeddings=True,
                                      num_labels=num_labels, problem_type=problem_type, pad_token_id=tok.pad_id)
    torch.manual_seed(seed)
    model = transformers.LlamaForSequenceClassification(hf_cfg)
    names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    hf_block = {"norm1.weight": "input_layernorm.weight", "att.W_query.weight": "self_attn.q_proj.weight",
                "att.W_key.weight": "self_attn.k_proj.weight", "att.W_value.weight": "self_attn.v_proj.weight",
                "att.out_proj.weight": "self_attn.o_proj.weight", "norm2.weight": "post_attention_layernorm.weight",
                "ff.gate.weight": "mlp.gate_proj.weight", "ff.up.weight": "mlp.up_proj.weight",
                "ff.down.weight": "mlp.down_proj.weight"}
    state = {}
    for k, v in ours_model.state_dict().items():
        if k in names:
            state[names[k]] = v
        elif k.startswith("trf_blocks."):
            _, i, rest = k.split(".", 2)
            if rest in hf_block:
                state[f"model.layers.{i}.{hf_block[rest]}"] = v
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert set(missing) <= {"score.weight"}, missing
    for p in model.parameters():
        p.requires_grad = False
    for p in [*model.model.layers[-1].parameters(), *model.model.norm.parameters(), *model.score.parameters()]:
        p.requires_grad = True
    return model, tok


def pad_batch(ids_list: list[list[int]], pad_id: int):
    """Right-padded ids and their attention mask, as DataCollatorWithPadding makes them."""
    import torch

    width = max(len(i) for i in ids_list)
    ids = torch.full((len(ids_list), width), pad_id)
    mask = torch.zeros((len(ids_list), width), dtype=torch.long)
    for r, i in enumerate(ids_list):
        ids[r, : len(i)], mask[r, : len(i)] = torch.tensor(i), 1
    return ids, mask


def peer_batches(n: int, epochs: int, batch_size: int, seed: int):
    """The peer's batches of example indices, an epoch's list at a time: `random.Random(seed)`
    shuffles all n each epoch, cut in order."""
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        yield [order[b: b + batch_size] for b in range(0, n, batch_size)]


def peer_fit(model, train_x: list, target_of, pad_id: int, epochs: int, batch_size: int, seed: int, started: float):
    """Our default recipe in transformers: AdamW (lr 8e-4, weight decay 0.1), cosine to zero, a seeded
    shuffle each epoch; `target_of(rows)` gives a batch's labels."""
    import torch
    import transformers

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=8e-4, weight_decay=0.1)
    steps = epochs * ((len(train_x) + batch_size - 1) // batch_size)
    schedule = transformers.get_cosine_schedule_with_warmup(optimizer, 0, steps)
    model.train()
    for epoch, batches in enumerate(peer_batches(len(train_x), epochs, batch_size, seed)):
        for rows in batches:
            ids, mask = pad_batch([train_x[i] for i in rows], pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=target_of(rows)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"    peer epoch {epoch + 1}: {time.perf_counter() - started:.0f}s", flush=True)
    model.eval()


def token_lengths(data: Path) -> dict:
    import numpy as np

    from gptclassify.weights import load_tokenizer

    tok = load_tokenizer(WEIGHTS)
    texts = pd.read_csv(data / "train.csv", keep_default_na=False, dtype=str)["text"]
    n = np.array([len(tok.encode(t)) for t in texts])
    return {"median": float(np.median(n)), "p90": float(np.percentile(n, 90)), "max": int(n.max()),
            "over_128": float((n > 128).mean()), "over_256": float((n > 256).mean()), "over_512": float((n > 512).mean())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help=f"rows: {', '.join(ROWS)}, tfidf, peer, lengths")
    parser.add_argument("--peer-truncation", default="head")
    parser.add_argument("--peer-cap", type=int, default=128)
    parser.add_argument("--peer-in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    full = DATA / "spam-assassin"
    if not (full / "dataset.json").is_file():
        sys.exit("run `../.venv/bin/python datasets.py spam-assassin` first")
    data = subset(full, DATA / "spam-assassin-small")
    if args.peer_in_process:
        print(json.dumps(peer(data, args.peer_truncation, args.peer_cap)))
        return
    wanted = args.only or ["lengths", "tfidf", *DEFAULT_ROWS, "peer"]
    previous = RESULTS / "long_text.json"
    results = json.loads(previous.read_text()).get("results", {}) if previous.is_file() else {}
    work = scratch_dir("gptclassify-long-")
    for name in wanted:
        print(f"== {name}", flush=True)
        if name == "lengths":
            results["lengths"] = {"subset_train": token_lengths(data), "full_train": token_lengths(full)}
        elif name == "tfidf":
            results["tfidf"] = {"subset": tfidf(data), "full": tfidf(full)}
        elif name == "peer":
            cmd = [sys.executable, __file__, "--peer-in-process", "--peer-truncation", args.peer_truncation,
                   "--peer-cap", str(args.peer_cap)]
            results[f"peer-{args.peer_truncation}-{args.peer_cap}"] = json_child(cmd)
        else:
            results[name] = ours(name, data, work)
        print(json.dumps({name: results.get(name) or results.get(f"peer-{args.peer_truncation}-{args.peer_cap}")}),
              flush=True)
        save("long_text", {"weights": WEIGHTS, "model": MODEL, "data": str(data), "results": results})


if __name__ == "__main__":
    main()
