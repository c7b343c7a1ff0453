"""The GPU run: the `cuda` tests, then speed against the transformers peer, in one command.

    benchmarks/gpu.sh OUT --test-workers 4 --datasets sms --frozen-shapes gpt2-124m qwen2.5-0.5b-shape
                                     # on an H200: about 8 minutes
    benchmarks/gpu.sh OUT2 --stages train --datasets sms-x10 --x10-shapes gpt2-124m qwen2.5-0.5b-shape
                                     # the x10 rows: about 4 more
    benchmarks/gpu.sh OUT --tiny     # anywhere: each stage at a tiny size, to check the script (CPU)

Everything in one command (the default) outran a 10-minute call on the H200: split it as above.

Stages, in this order; OUT/gpu.json is rewritten after each, so a run cut short keeps what it measured:
  tests    `pytest -m cuda` (tests/test_cuda.py): logits against the CPU, training, resume, predict,
           serve, evaluate, torchrun with NCCL
  train    the default `gptclassify train` (one process, fresh feature cache, whole command timed)
           against the transformers peer doing the same recipe with the same weights and tokens
           (XForSequenceClassification, SDPA attention, bf16 autocast as the Trainer's `bf16=True`,
           fused AdamW, last block + final norm + head trained, batch 8, 5 epochs, validation accuracy
           after each epoch), on the book's SMS split and on SMS x10 (every text ten times, each copy
           with its own suffix). On SMS x10 the peer runs PEER_EPOCHS_X10 epochs and its 5-epoch time
           is its measured wall plus the epochs not run at its last epoch's pace (said so in the JSON);
           --reuse-peer takes the peer's rows from an earlier gpu.json instead of running them again.
  frozen   the frozen pass alone on SMS x10: positions/s and the share of the GPU's dense bf16 peak,
           at the CPU's batch (32 texts) and at several position budgets
  predict  `gptclassify predict` over 100,000 texts against the peer's bf16 model with its fast
           tokenizer, length-sorted batches, at its best of two batch sizes
  serve    `gptclassify serve` on the GPU: requests/s of single-text requests from concurrent clients

Models: random weights in the real shapes (the GPU machine reaches no hub): GPT-2 124M, SmolLM2-135M
and a 0.5B Llama-shaped model with Qwen2.5-0.5B's sizes (no q/k/v biases: our Llama has none).
Llama shapes read SmolLM2's tokenizer (SMOLLM2_TOKENIZER, taken from the GGUF by gpu.sh's preparation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from common import (ROOT, SHARED, book_split, gpt2_vocab_and_merges, machine, run_clients, scratch_dir, serving,
                    sms_messages)

DENSE_BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}  # vendor datasheets, dense (no sparsity)
PEER_EPOCHS_X10 = 2  # the first epoch of a run pays the GPU's warm-up; the rest are projected from the last
EPOCHS = 5
PREDICT_TEXTS = 100_000
SMOLLM2_TOKENIZER = Path(os.environ.get("GPTCLASSIFY_SMOLLM2_TOKENIZER", ROOT / ".gpu" / "smollm2-tokenizer.json"))

SHAPES = {  # name: (family, our --model name, transformers config)
    "gpt2-124m": ("gpt2", "gpt2", dict(n_layer=12, n_embd=768, n_head=12)),
    "smollm2-135m": ("llama", "smollm2-135m", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                                   rope_theta=100000.0)),
    "qwen2.5-0.5b-shape": ("llama", "smollm2-135m", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                                         num_attention_heads=14, num_key_value_heads=2,
                                                         vocab_size=151936, rope_theta=1000000.0)),
}
TINY_SHAPES = {
    "gpt2-tiny": ("gpt2", "gpt2", dict(n_layer=2, n_embd=64, n_head=4)),
    "llama-tiny": ("llama", "smollm2-135m", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=50257,
                                                 rope_theta=10000.0)),
}


# ------------------------------------------------------------------ set-up

def make_weights(family: str, hf: dict, out: Path, tokenizer: Path | None) -> Path:
    """A causal LM with transformers' own initialisation, saved in the Hugging Face layout."""
    import transformers

    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        if family == "gpt2":
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf))
        else:
            cfg = transformers.LlamaConfig(**hf, max_position_embeddings=8192, tie_word_embeddings=True,
                                           rms_norm_eps=1e-5)
            model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    if family == "llama":
        shutil.copy(tokenizer, out / "tokenizer.json")
    return out


def gpt2_bpe_tokenizer_json(out: Path) -> Path:
    """GPT-2's byte-level BPE (the shared encoder.json / vocab.bpe) as a tokenizer.json, for Llama
    shapes where SmolLM2's tokenizer is not at hand (the tiny CPU check)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(*gpt2_vocab_and_merges()))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(out))
    return out


def repeated(data: Path, out: Path, times: int, limit: int | None = None) -> Path:
    """A prepared data directory with each split's texts `times` times, copy k ending in ' [k]'."""
    import pandas as pd

    if (out / "dataset.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((data / "dataset.json").read_text())
    for split in ("train", "validation", "test"):
        df = pd.read_csv(data / f"{split}.csv", keep_default_na=False, dtype=str)[:limit]
        copies = [df.assign(text=df["text"] + (f" [{k}]" if k else "")) for k in range(times)]
        pd.concat(copies).to_csv(out / f"{split}.csv", index=False)
        meta["counts"][split] = {k: v * times for k, v in df["label"].value_counts().to_dict().items()}
    meta["parameters"] = {"repeated_from": str(data), "times": times}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED / "gpt2"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def gptclassify(*args, extra_env=None, timeout=900) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gptclassify", *map(str, args)], capture_output=True, text=True,
                          env={**env(), **(extra_env or {})}, timeout=timeout)
    return done, time.perf_counter() - started


def child(*args, timeout=900) -> dict:
    """This script's --child mode in its own process: its last stdout line is its JSON result, to
    which the process's whole wall time (start, imports and all, as for a command) is added."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout, cwd=Path(__file__).parent)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else f"exit {done.returncode}",
                "stderr_tail": done.stderr[-1500:]}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_wall_seconds": time.perf_counter() - started}


def peer_class(shape: str):
    """The family of `shape` and transformers' sequence-classification class for it."""
    import transformers

    family = SHAPES.get(shape, TINY_SHAPES.get(shape))[0]
    return family, (transformers.GPT2ForSequenceClassification if family == "gpt2"
                    else transformers.LlamaForSequenceClassification)


# ------------------------------------------------------------------ stage: tests

def stage_tests(out: Path, workers: int) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the cuda tests skip themselves here"}
    xml = out / "gpu_tests.xml"
    started = time.perf_counter()
    parallel = ["-n", str(workers)] if workers > 1 else []  # pytest-xdist: each test's processes start slowly there
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p",
                           "no:cacheprovider", f"--junitxml={xml}", *parallel], capture_output=True, text=True,
                          env=env(), cwd=ROOT, timeout=400)
    (out / "gpu_tests.log").write_text(done.stdout[-20000:] + done.stderr[-5000:])
    cases = {}
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            bad = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
            cases[case.get("name")] = {"outcome": bad[0] if bad else "passed", "seconds": float(case.get("time", 0))}
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return {"exit": done.returncode, "summary": summary, "cases": cases, "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------ stage: train

def ours_train(shape: str, weights: Path, data: Path, work: Path) -> dict:
    run = work / f"run-{shape}-{data.name}"
    done, wall = gptclassify("train", "--data", data, "--weights", weights, "--out", run,
                             "--overwrite", "--epochs", EPOCHS, extra_env={"GPTCLASSIFY_FEATURE_CACHE": str(work / "fc")})
    shutil.rmtree(work / "fc", ignore_errors=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300], "stderr_tail": done.stderr[-1500:]}
    metrics = json.loads((run / "metrics.json").read_text())
    frozen = next((line for line in done.stdout.splitlines() if "through the frozen layers" in line), "")
    t = metrics["training"]
    return {"wall_seconds": wall, "train_loop_seconds": t["seconds"], "steps": t["steps"],
            "steps_per_second": t["steps"] / t["seconds"], "weights_load_seconds": t["weights_load_seconds"],
            "test_accuracy": metrics["test"]["accuracy"], "frozen_pass_log": frozen.strip(), "run": str(run)}


def peer_train(shape: str, weights: Path, data: Path, epochs_run: int) -> dict:
    """(child process) transformers' XForSequenceClassification, our default recipe and tokens."""
    import random

    import pandas as pd
    import transformers

    from gptclassify.data.tokenizer import keep
    from gptclassify.weights import load_tokenizer
    from gptclassify.config import DEFAULT_MAX_LENGTH, DEFAULT_TRUNCATION, FAMILY_DEFAULTS

    family, cls = peer_class(shape)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.zeros(1, device=device)  # CUDA initialised before the clock starts, as for ours' import
    started = time.perf_counter()
    tok = load_tokenizer(weights)
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0) if family == "gpt2" else {}  # ours has none
    model = cls.from_pretrained(weights, num_labels=2, pad_token_id=tok.pad_id, attn_implementation="sdpa",
                                **no_dropout).to(device)
    labels = ["ham", "spam"]
    read = {s: pd.read_csv(data / f"{s}.csv", keep_default_na=False, dtype=str) for s in ("train", "validation", "test")}
    full = {s: [tok.encode(t) for t in df["text"]] for s, df in read.items()}
    cap = min(max(map(len, full["train"])), DEFAULT_MAX_LENGTH, model.config.max_position_embeddings)
    xs = {s: [keep(e, cap, DEFAULT_TRUNCATION) or [tok.pad_id] for e in enc] for s, enc in full.items()}
    ys = {s: [labels.index(y) for y in df["label"]] for s, df in read.items()}
    for p in model.parameters():
        p.requires_grad = False
    last = model.transformer.h[-1] if family == "gpt2" else model.model.layers[-1]
    norm = model.transformer.ln_f if family == "gpt2" else model.model.norm
    for p in [*last.parameters(), *norm.parameters(), *model.score.parameters()]:
        p.requires_grad = True
    recipe = FAMILY_DEFAULTS[family]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe["lr"], weight_decay=0.1,
                                  fused=device.type == "cuda")
    steps_per_epoch = (len(xs["train"]) + 7) // 8
    schedule = (transformers.get_constant_schedule(optimizer) if recipe["lr_schedule"] == "constant" else
                transformers.get_cosine_schedule_with_warmup(optimizer, 0, EPOCHS * steps_per_epoch))

    def batch(rows, split):
        seqs = [xs[split][i] for i in rows]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_id)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
        return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)

    def accuracy(split):
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            for b in range(0, len(xs[split]), 64):
                rows = list(range(b, min(b + 64, len(xs[split]))))
                ids, mask = batch(rows, split)
                predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu()
                correct += (predicted == torch.tensor([ys[split][i] for i in rows])).sum().item()
        model.train()
        return correct / len(xs[split])

    setup = time.perf_counter() - started
    rng = random.Random(123)
    model.train()
    epoch_seconds, steps = [], 0
    for _ in range(epochs_run):
        tick = time.perf_counter()
        order = list(range(len(xs["train"])))
        rng.shuffle(order)
        for b in range(0, len(order), 8):
            rows = order[b: b + 8]
            ids, mask = batch(rows, "train")
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([ys["train"][i] for i in rows],
                                                                                     device=device)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            steps += 1
        val = accuracy("validation")
        epoch_seconds.append(time.perf_counter() - tick)
    test = accuracy("test")
    train_seconds = sum(epoch_seconds)
    return {"in_process_seconds": time.perf_counter() - started, "epochs_run": epochs_run,
            "epochs_not_run_seconds": (EPOCHS - epochs_run) * epoch_seconds[-1],
            "projected_from_epochs": None if epochs_run == EPOCHS else epochs_run, "setup_seconds": setup,
            "epoch_seconds": epoch_seconds, "steps_per_second": steps / train_seconds, "max_length": cap,
            "validation_accuracy_last_epoch": val, "test_accuracy": test if epochs_run == EPOCHS else None,
            "dtype": "float32 weights, bf16 autocast", "attention": model.config._attn_implementation}


def stage_train(weights: dict, datasets: dict, work: Path, result: dict, save, reuse: dict, x10_shapes) -> None:
    for data_name, data in datasets.items():
        for shape, (family, model_name, w) in weights.items():
            if data_name != "sms" and x10_shapes and shape not in x10_shapes:
                continue
            key = f"{shape}/{data_name}"
            ours = ours_train(shape, w, data, work)
            epochs = EPOCHS if data_name == "sms" else PEER_EPOCHS_X10
            earlier = reuse.get("train", {}).get(key, {}).get("peer", {})
            if "seconds" in earlier:
                peer = {**earlier, "reused_from": {"date": reuse.get("date"), "commit": reuse.get("commit")}}
            else:
                peer = child("peer-train", shape, w, data, epochs)
            if "process_wall_seconds" in peer and "reused_from" not in peer:  # the whole command's time
                peer["seconds"] = peer["process_wall_seconds"] + peer["epochs_not_run_seconds"]
            row = {"ours": ours, "peer": peer}
            if "wall_seconds" in ours and "seconds" in peer:
                row["speedup"] = peer["seconds"] / ours["wall_seconds"]
                row["steps_per_second_ratio"] = ours["steps_per_second"] / peer["steps_per_second"]
            result[key] = row
            print(f"  train {key}: ours {ours.get('wall_seconds', ours.get('error'))} s, peer "
                  f"{peer.get('seconds', peer.get('error'))} s", flush=True)
            save()


# ------------------------------------------------------------------ stage: frozen pass

def frozen_flops(model, encoded: list[list[int]], blocks: int) -> float:
    """Useful FLOPs of `blocks` blocks over these texts: 2 per weight per position, and per layer
    4 * width * i for the i-th position's causal attention (scores and mix), padding not counted."""
    per_block = sum(p.numel() for p in model.trf_blocks[0].parameters() if p.dim() == 2)
    positions = sum(map(len, encoded))
    width = model.cfg.n_heads * (model.cfg.emb_dim // model.cfg.n_heads)
    attention = sum(4 * width * n * (n + 1) / 2 for n in map(len, encoded))
    return blocks * (2 * per_block * positions + attention)


def frozen_pass(weights: Path, data: Path, budgets: list) -> dict:
    """(child process) The frozen pass of the default recipe (every block but the last, bf16) over
    every text of `data`, at each batching in `budgets` (texts, positions or None)."""
    import pandas as pd

    from gptclassify.data.batches import TextDataset
    from gptclassify.training.features import build_feature_store
    from gptclassify.classifier.prefix import FrozenPrefix, resolve_prefix_dtype
    from gptclassify.weights import load_tokenizer
    from gptclassify.config import DEFAULT_MAX_LENGTH
    from gptclassify.weights import load_pretrained

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_pretrained(weights).to(device), load_tokenizer(weights)
    texts = [t for s in ("train", "validation", "test") for t in pd.read_csv(data / f"{s}.csv", keep_default_na=False,
                                                                             dtype=str)["text"]]
    ds = TextDataset(texts, [0] * len(texts), tok, None, min(model.cfg.context_length, DEFAULT_MAX_LENGTH), "head+tail")
    start = len(model.trf_blocks) - 1
    prefix = FrozenPrefix(model, start, resolve_prefix_dtype("auto", device), device)
    flops = frozen_flops(model, ds.encoded, start)
    name = torch.cuda.get_device_name() if device.type == "cuda" else ""
    peak = next((v for k, v in DENSE_BF16_PEAK.items() if k in name), None)
    out = {"positions": sum(map(len, ds.encoded)), "texts": len(ds), "blocks": start, "useful_flops": flops,
           "dense_bf16_peak": peak, "prefix_dtype": prefix.dtype, "runs": []}
    for texts_per_batch, max_tokens in budgets:
        for repeat in range(2):  # the first pays for kernel selection and the allocator's growth
            if device.type == "cuda":
                torch.cuda.synchronize()
            tick = time.perf_counter()
            build_feature_store(prefix, ds, pad_id=tok.pad_id, pad_to=None, pooling="last-token",
                                batch_size=texts_per_batch, max_tokens=max_tokens, device=device)
            seconds = time.perf_counter() - tick
        compute = prefix_alone(prefix, ds, tok.pad_id, texts_per_batch, max_tokens, device)
        out["runs"].append({"texts_per_batch": texts_per_batch, "max_tokens": max_tokens, "seconds": seconds,
                            "positions_per_second": out["positions"] / seconds, "tflops": flops / seconds / 1e12,
                            "share_of_peak": flops / seconds / peak if peak else None,
                            "compute_alone_seconds": compute,
                            "compute_alone_share_of_peak": flops / compute / peak if peak else None})
    return out


def prefix_alone(prefix, ds, pad_id: int, texts_per_batch: int, max_tokens, device) -> float:
    """Seconds of the same batches through the prefix with nothing copied back (ids already on the
    device): what the frozen pass would take if moving its output cost nothing."""
    from gptclassify.data.batches import Collate
    from gptclassify.data.lengths import length_sorted_batches

    collate = Collate(pad_id)
    batches = [collate([ds[i] for i in rows])[0].to(device)
               for rows in length_sorted_batches([len(e) for e in ds.encoded], texts_per_batch, max_tokens)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    tick = time.perf_counter()
    for ids in batches:
        prefix(ids)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tick


def matmul_rate() -> float | None:
    """bf16 8192^3 matrix products per second on this GPU, in FLOP/s (the measured ceiling)."""
    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    tick = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 10 * 2 * 8192 ** 3 / (time.perf_counter() - tick)


# ------------------------------------------------------------------ stage: predict

def peer_predict(shape: str, weights: Path, texts_file: Path, batch_sizes: list[int]) -> dict:
    """(child process) The peer's fastest documented inference: bf16 weights, SDPA, its fast tokenizer
    (batched), texts sorted by length, the best of `batch_sizes`; the score head reads the last real token."""
    import tokenizers
    import transformers

    family, cls = peer_class(shape)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.zeros(1, device=device)
    texts = texts_file.read_text(encoding="utf-8").splitlines()
    started = time.perf_counter()
    if family == "gpt2":
        vocab, merges = gpt2_vocab_and_merges()
        fast = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)
        pad = fast.eos_token_id
    else:
        fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_file(str(weights / "tokenizer.json")))
        pad = 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = cls.from_pretrained(weights, num_labels=2, pad_token_id=pad, attn_implementation="sdpa", dtype=dtype)
    model = model.to(device).eval()
    load = time.perf_counter() - started
    runs = {}
    for bs in batch_sizes:
        tick = time.perf_counter()
        ids = fast(texts, truncation=True, max_length=256)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        labels = [None] * len(ids)
        with torch.inference_mode():
            for b in range(0, len(order), bs):
                rows = order[b: b + bs]
                width = max(len(ids[i]) for i in rows)
                x = torch.full((len(rows), width), pad)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    x[r, : len(ids[i])], mask[r, : len(ids[i])] = torch.tensor(ids[i]), 1
                logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
                for i, p in zip(rows, logits.float().softmax(-1).cpu().tolist()):
                    labels[i] = p
        runs[bs] = time.perf_counter() - tick
    best = min(runs, key=runs.get)
    return {"load_seconds": load, "seconds_by_batch_size": runs, "best_batch_size": best,
            "texts_per_second": len(texts) / runs[best], "dtype": str(dtype)}


def stage_predict(run: Path, shape: str, weights: Path, work: Path, n: int) -> dict:
    messages = sms_messages()
    texts = [f"{messages[i % len(messages)]} [{i // len(messages)}]".replace("\n", " ") for i in range(n)]
    texts_file = work / "predict-texts.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = {"texts": n, "run": str(run)}
    for name, extra in (("ours_default", []), ("ours_batch_32", ["--batch-size", "32"])):
        done, wall = gptclassify("predict", run, "--input", texts_file, "--output", work / f"{name}.jsonl")
        if done.returncode != 0:
            out[name] = {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
            continue
        lines = sum(1 for _ in open(work / f"{name}.jsonl", encoding="utf-8"))
        out[name] = {"wall_seconds": wall, "texts_per_second": n / wall, "lines_written": lines, "args": extra}
        if extra == [] and not torch.cuda.is_available():
            break  # on a CPU the default is batch 32: the same run
    peer = out["peer"] = child("peer-predict", shape, weights, texts_file, "64,512")
    if "texts_per_second" in peer and "texts_per_second" in out.get("ours_default", {}):
        # As one command at its best batch size: the process's wall less the other batch size's pass.
        runs = peer["seconds_by_batch_size"]
        peer["command_seconds"] = peer["process_wall_seconds"] - sum(runs.values()) + runs[str(peer["best_batch_size"])]
        peer["command_texts_per_second"] = n / peer["command_seconds"]
        out["speedup"] = out["ours_default"]["texts_per_second"] / peer["command_texts_per_second"]
        out["speedup_vs_peer_loop_alone"] = out["ours_default"]["texts_per_second"] / peer["texts_per_second"]
    return out


# ------------------------------------------------------------------ stage: serve

def stage_serve(run: Path, clients: int, seconds: float) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with serving(run, env=env(), device=device) as url:
        messages = sms_messages()
        latencies, statuses, lock = [], {}, threading.Lock()
        deadline = time.perf_counter() + seconds

        def client(seed):
            i = seed
            while time.perf_counter() < deadline:
                body = json.dumps({"texts": [messages[i % len(messages)]]}).encode()
                i += clients
                tick = time.perf_counter()
                try:
                    req = urllib.request.Request(url + "/v1/classify", data=body,
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status = r.status
                        r.read()
                except urllib.error.HTTPError as e:
                    status = e.code
                except OSError as e:
                    status = type(e).__name__
                with lock:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status == 200:
                        latencies.append(time.perf_counter() - tick)

        elapsed = run_clients(client, clients)
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
        return {"device": device, "clients": clients, "seconds": elapsed, "requests_per_second": len(latencies) / elapsed,
                "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "statuses": statuses}


# ------------------------------------------------------------------ the table and main

def table(result: dict) -> str:
    lines = ["| what | ours | transformers peer | ours vs peer |", "|---|---|---|---|"]
    for key, row in result.get("train", {}).items():
        o, p = row["ours"], row["peer"]
        proj = f" ({EPOCHS} epochs projected from {p['projected_from_epochs']})" if p.get("projected_from_epochs") else ""
        proj += f" (run of {p['reused_from']['date']})" if p.get("reused_from") else ""
        lines.append(f"| train {key}: wall s | {o.get('wall_seconds', float('nan')):.1f} | "
                     f"{p.get('seconds', float('nan')):.1f}{proj} | {row.get('speedup', float('nan')):.1f}x |")
        lines.append(f"| train {key}: steps/s | {o.get('steps_per_second', float('nan')):.0f} | "
                     f"{p.get('steps_per_second', float('nan')):.0f} | {row.get('steps_per_second_ratio', float('nan')):.1f}x |")
    for shape, f in result.get("frozen", {}).items():
        if "runs" in f:
            best = max(f["runs"], key=lambda r: r["positions_per_second"])
            share = f"{best['share_of_peak']:.1%} of dense bf16 peak" if best.get("share_of_peak") else ""
            lines.append(f"| frozen pass {shape} x10 (best batching {best['texts_per_batch']}/{best['max_tokens']}) | "
                         f"{best['positions_per_second']:,.0f} positions/s, {best['tflops']:.1f} TFLOP/s {share} | | |")
    pr = result.get("predict", {})
    if "ours_default" in pr:
        lines.append(f"| predict {pr['texts']:,} texts (whole command): texts/s | "
                     f"{pr['ours_default'].get('texts_per_second', float('nan')):,.0f} | "
                     f"{pr.get('peer', {}).get('command_texts_per_second', float('nan')):,.0f} | {pr.get('speedup', float('nan')):.1f}x |")
    sv = result.get("serve", {})
    if "requests_per_second" in sv:
        lines.append(f"| serve, {sv['clients']} clients, 1 text each: requests/s | {sv['requests_per_second']:.0f} "
                     f"(p50 {sv['p50_ms']:.0f} ms, p99 {sv['p99_ms']:.0f} ms) | | |")
    return "\n".join(lines)


def main_child(args: list[str]) -> None:
    what, *rest = args
    if what == "peer-train":
        shape, weights, data, epochs = rest
        result = peer_train(shape, Path(weights), Path(data), int(epochs))
    elif what == "frozen":
        weights, data, budgets = rest
        result = frozen_pass(Path(weights), Path(data), json.loads(budgets))
    else:
        shape, weights, texts, sizes = rest
        result = peer_predict(shape, Path(weights), Path(texts), [int(s) for s in sizes.split(",")])
    print(json.dumps(result))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return main_child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu.json, the tests' log and junit XML")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data: checks the script on a CPU")
    parser.add_argument("--stages", nargs="+", default=["tests", "train", "frozen", "predict", "serve"])
    parser.add_argument("--budget", type=float, default=480, help="seconds; stages that would start later are skipped")
    parser.add_argument("--commit", default=os.environ.get("GPTCLASSIFY_COMMIT", ""))
    parser.add_argument("--reuse-peer", type=Path, help="an earlier gpu.json whose peer rows stand in for new ones")
    parser.add_argument("--datasets", nargs="+", default=["sms", "sms-x10"], choices=["sms", "sms-x10"],
                        help="what the train stage runs on (the frozen stage always reads SMS x10)")
    parser.add_argument("--x10-shapes", nargs="*", help="train on SMS x10 with these shapes only (default: all)")
    parser.add_argument("--frozen-shapes", nargs="*", help="the frozen-pass stage for these shapes only (default: all)")
    parser.add_argument("--test-workers", type=int, default=1, help="pytest-xdist workers for the cuda tests")
    args = parser.parse_args()
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = scratch_dir("gptclassify-gpu-")
    cuda = torch.cuda.is_available()
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "commit": args.commit,
              "torch_cuda": torch.version.cuda, "tiny": args.tiny, "command": " ".join(sys.argv), "skipped": {}}
    if cuda:
        result["machine"]["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
        result["matmul_bf16_8192_flops"] = matmul_rate()

    def save():
        result["elapsed_seconds"] = time.perf_counter() - began
        (args.out / "gpu.json").write_text(json.dumps(result, indent=2))

    def due(stage: str) -> bool:
        if stage not in args.stages:
            return False
        if time.perf_counter() - began > args.budget:
            result["skipped"][stage] = f"budget of {args.budget:.0f} s spent"
            return False
        print(f"[{time.perf_counter() - began:5.0f}s] {stage} ...", flush=True)
        return True

    shapes = TINY_SHAPES if args.tiny else SHAPES
    llama_tok = SMOLLM2_TOKENIZER if SMOLLM2_TOKENIZER.is_file() and not args.tiny else \
        gpt2_bpe_tokenizer_json(work / "gpt2-bpe-tokenizer.json")
    result["llama_tokenizer"] = str(llama_tok)
    weights = {shape: (family, name, make_weights(family, hf, work / f"weights-{shape}", llama_tok))
               for shape, (family, name, hf) in shapes.items()}
    sms = book_split(work / "sms")
    limit = 40 if args.tiny else None
    datasets = {"sms": repeated(sms, work / "sms-small", 1, limit) if args.tiny else sms,
                "sms-x10": repeated(sms, work / "sms-x10", 10, limit)}
    save()
    if due("tests"):
        result["tests"] = stage_tests(args.out, args.test_workers)
        if not cuda:
            result["skipped"]["tests"] = result["tests"]["skipped"]
        save()
    if due("train"):
        result["train"] = {}
        reuse = json.loads(args.reuse_peer.read_text()) if args.reuse_peer else {}
        chosen = {name: data for name, data in datasets.items() if name in args.datasets}
        stage_train(weights, chosen, work, result["train"], save, reuse, args.x10_shapes)
    if due("frozen"):
        budgets = [[32, None], [4096, 16384], [4096, 65536]]  # 262,144 positions was slower on the H200
        result["frozen"] = {shape: child("frozen", w, datasets["sms-x10"], json.dumps(budgets))
                            for shape, (_, _, w) in weights.items()
                            if not args.frozen_shapes or shape in args.frozen_shapes}
        save()
    first = next(iter(weights))
    run = Path(result.get("train", {}).get(f"{first}/sms", {}).get("ours", {}).get("run", ""))
    if due("predict"):
        if (run / "config.json").is_file():
            result["predict"] = stage_predict(run, first, weights[first][2], work, 2000 if args.tiny else PREDICT_TEXTS)
        else:
            result["skipped"]["predict"] = "no trained run from the train stage"
        save()
    if due("serve"):
        if (run / "config.json").is_file():
            result["serve"] = stage_serve(run, clients=8 if args.tiny else 32, seconds=3 if args.tiny else 15)
        else:
            result["skipped"]["serve"] = "no trained run from the train stage"
        save()
    if not cuda:
        result["skipped"]["gpu"] = "no CUDA device: the speed stages ran on the CPU at a tiny size; no GPU figure here"
    save()
    print(table(result))
    if result["skipped"]:
        print("skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()))
    print(f"wrote {args.out / 'gpu.json'} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
