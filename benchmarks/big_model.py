"""A 1.5B-parameter decoder on this machine: loading never holds two full copies, and its last block
trains. Qwen2.5-1.5B's shape (28 blocks of width 1,536, GQA 12/2, q/k/v biases, 151,936-token
vocabulary) with its head untied (so 1.78B parameters, not 1.54B: a harder case) and random
weights, written as the hub ships it (bfloat16, sharded, config.json + model.safetensors.index.json)
and GPT-2's tokenizer.json standing in for Qwen's.

    ../.venv/bin/python big_model.py

Reported: the checkpoint's size on disk, the float32 model's size, the peak RSS of a process that
only loads it (and its ratio to the model's size), and `gptclassify train --model DIR` (last block,
the default recipe) on 200 messages of the book's split: wall time and peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import ROOT, SHARED, book_split, cpu_description, save, scratch_dir
from long_text import subset

SHAPE = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
             num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0,
             rms_norm_eps=1e-6, tie_word_embeddings=False, model_type="qwen2", torch_dtype="bfloat16")
SHARD_BYTES = 1 << 30
GPTCLASSIFY = str(ROOT / ".venv" / "bin" / "gptclassify")


def hf_tensors(c: dict):
    """(name, shape) of every tensor of a Qwen2 checkpoint of shape `c`, in the hub's names."""
    d, kv = c["hidden_size"], c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]
    yield "model.embed_tokens.weight", (c["vocab_size"], d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield from [(p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,)),
                    (p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.q_proj.bias", (d,)),
                    (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.k_proj.bias", (kv,)),
                    (p + "self_attn.v_proj.weight", (kv, d)), (p + "self_attn.v_proj.bias", (kv,)),
                    (p + "self_attn.o_proj.weight", (d, d)), (p + "mlp.gate_proj.weight", (c["intermediate_size"], d)),
                    (p + "mlp.up_proj.weight", (c["intermediate_size"], d)),
                    (p + "mlp.down_proj.weight", (d, c["intermediate_size"]))]
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (c["vocab_size"], d)


def write_checkpoint(out: Path) -> int:
    """Random bfloat16 shards of about 1 GiB, their index and config.json; the parameter count."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import gpt2_tokenizer_json

    out.mkdir(parents=True)
    torch.manual_seed(0)
    shard, size, index, count, n = {}, 0, {}, 0, 0

    def flush():
        nonlocal shard, size, n
        n += 1
        name = f"model-{n:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        index.update({k: name for k in shard})
        shard, size = {}, 0

    for name, shape in hf_tensors(SHAPE):
        t = torch.ones(shape) if name.endswith("norm.weight") else torch.randn(shape) * 0.02
        shard[name] = t.to(torch.bfloat16)
        size += shard[name].numel() * 2
        count += shard[name].numel()
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": count * 2},
                                                                  "weight_map": index}))
    (out / "config.json").write_text(json.dumps(SHAPE))
    os.environ.setdefault("GPTCLASSIFY_GPT2_BPE_DIR", str(SHARED / "gpt2"))
    gpt2_tokenizer_json(out / "tokenizer.json")
    return count


def peak_mb() -> float:
    """This process's own peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_only(path: Path) -> None:
    """In a child: load, report the peak RSS as JSON."""
    from gptclassify import load_pretrained

    before = peak_mb()
    started = time.perf_counter()
    model = load_pretrained(path)
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "model_mb": params * 4 / 2**20, "seconds": seconds, "rss_before_mb": before,
                      "peak_rss_mb": peak_mb()}))


def child_peak(cmd: list[str], env=None) -> tuple[float, float, str]:
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{cmd[:3]} failed:\n{out[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--load-only":
        load_only(Path(sys.argv[2]))
        return
    work = scratch_dir("gptclassify-big-")
    started = time.perf_counter()
    params = write_checkpoint(work / "qwen2-1.5b-shape")
    print(f"wrote {params / 1e9:.2f}B parameters in bfloat16 in {time.perf_counter() - started:.0f}s", flush=True)
    disk = sum(f.stat().st_size for f in (work / "qwen2-1.5b-shape").glob("*.safetensors"))
    _, _, out = child_peak([sys.executable, __file__, "--load-only", str(work / "qwen2-1.5b-shape")])
    load = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(load), flush=True)
    small = subset(book_split(work / "data"), work / "small", (200, 50, 100))
    wall, rss, log = child_peak([GPTCLASSIFY, "train", "--data", str(small), "--model", str(work / "qwen2-1.5b-shape"),
                                 "--out", str(work / "run"), "--epochs", "1"])
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    result = {"cpu": cpu_description(), "params": params, "checkpoint_gb": disk / 1e9,
              "load": {**load, "peak_over_model": load["peak_rss_mb"] / load["model_mb"]},
              "train": {"wall_seconds": wall, "peak_rss_mb": rss, "test_accuracy": metrics["test"]["accuracy"],
                        "log_tail": log.strip().splitlines()[-8:]}}
    path = save("big_model", result)
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
