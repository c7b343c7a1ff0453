"""Where gptclassify's default fine-tuning spends its time: the cache build, then a cProfile of
`training.run.train()` (GPT-2 124M, random weights, the book's split, 5 epochs).

    python benchmarks/profile_finetune.py [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from common import book_split, scratch_dir

from gptclassify.training.run import train

from gptclassify.training.prepare import prepare
from gptclassify.config import make_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    work = scratch_dir("gptclassify-profile-")
    data = book_split(work / "sms")
    started = time.perf_counter()
    trainer = prepare("gpt2", "random", data, make_config(None), work / "run")
    print(f"construction, tokenizing and the feature cache: {time.perf_counter() - started:.1f}s")
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    metrics = train(trainer)
    profile.disable()
    print(f"run(): {time.perf_counter() - started:.1f}s, of which training steps {metrics['training']['seconds']:.1f}s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
