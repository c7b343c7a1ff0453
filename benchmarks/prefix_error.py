"""How far a bfloat16 frozen prefix moves what the head reads, model by model: the first 96 training
messages of the book's SMS split, one at a time (no padding), through the frozen blocks in float32
and in bfloat16 (`auto` on a CPU with bfloat16 units), then each through the last block (float32)
and the final norm; the relative L2 distance of the two at the last token (what last-token pooling
reads) and over every position.

    ../.venv/bin/python prefix_error.py [--weights smollm2-135m-instruct-gguf gemma-3-270m-gguf ...]
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch
from common import book_split, save, scratch_dir

from gptclassify.classifier.prefix import FrozenPrefix, describe_cpu
from gptclassify.weights import load_pretrained, load_tokenizer

WEIGHTS = ("smollm2-135m-instruct-gguf", "gemma-3-270m-gguf", "qwen2.5-coder-0.5b-instruct-gguf")
MESSAGES = 96


def distances(weights: str, texts: list[str]) -> dict:
    model, tok = load_pretrained(weights).eval(), load_tokenizer(weights)
    start, cpu = len(model.trf_blocks) - 1, torch.device("cpu")
    prefixes = {d: FrozenPrefix(model, start, d, cpu) for d in ("float32", "bfloat16")}
    last, every = [], []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text)])
            a, b = (model.final_norm(model.trf_blocks[start](prefixes[d](ids).float()))[0] for d in prefixes)
            last.append(((b[-1] - a[-1]).norm() / a[-1].norm()).item())
            every.append(((b - a).norm() / a.norm()).item())
    return {"last_token": {"median": statistics.median(last), "max": max(last)},
            "every_position": {"median": statistics.median(every), "max": max(every)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=list(WEIGHTS))
    args = parser.parse_args()
    sms = book_split(scratch_dir("gptclassify-prefix-error-") / "sms")
    texts = pd.read_csv(sms / "train.csv", keep_default_na=False, dtype=str)["text"].tolist()[:MESSAGES]
    results = {}
    for weights in args.weights:
        results[weights] = distances(weights, texts)
        print(weights, results[weights], flush=True)
    save("prefix_error", {"cpu": describe_cpu(), "messages": MESSAGES, "results": results})


if __name__ == "__main__":
    main()
