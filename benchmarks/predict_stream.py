"""`gptclassify predict --input FILE --output FILE` over 10,000 and 100,000 lines: peak memory as
the file grows, and the time spent beyond the model's own forward passes (reading, tokenizing,
sorting, formatting, writing).

    ../.venv/bin/python predict_stream.py

The classifier: a shrunken GPT-2 (4 layers, 256 wide, random weights) fine-tuned for a few steps
through the Python API. Each size runs in its own process (peak RSS is that process's); inside,
the forward passes (`prefix.run_logits`) are timed and subtracted from predict's whole time
(the model's loading is outside both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import book_split, save, scratch_dir, sms_messages

CHILD = r"""
import json, sys, time
import gptclassify.inference.predict as predict
from gptclassify.cli import main
real, forward = predict.run_logits, [0.0]
def timed(*a, **k):
    t = time.perf_counter(); out = real(*a, **k); forward[0] += time.perf_counter() - t; return out
predict.run_logits = timed
import gptclassify.inference.predict_file as pf
real_predict_to = pf.predict_to
whole = [0.0]
def timed_predict_to(*a, **k):
    t = time.perf_counter(); real_predict_to(*a, **k); whole[0] = time.perf_counter() - t
import gptclassify.cli as cli
pf.predict_to = timed_predict_to
status = main(sys.argv[1:])
print(json.dumps({"status": status, "predict_seconds": whole[0], "forward_seconds": forward[0]}))
"""


def make_run(work: Path) -> Path:
    import torch
    import transformers

    from gptclassify.training.run import train_run
    from gptclassify.config import make_config

    weights = work / "gpt2-4x256"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=4, n_embd=256, n_head=4)).save_pretrained(weights)
    run = work / "run"
    train_run(None, str(weights), book_split(work / "sms"), make_config(None, epochs=1, max_steps=10), run,
            log=lambda *a: None)
    return run


def main():
    work = scratch_dir("gptclassify-stream-")
    run = make_run(work)
    messages = sms_messages()
    results = {}
    for n in (10_000, 100_000):
        src = work / f"in-{n}.txt"
        with open(src, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(f"{messages[i % len(messages)]} #{i}\n")
        out = work / f"out-{n}.jsonl"
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", CHILD, "predict", str(run), "--input", str(src),
                                  "--output", str(out)], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        lines = child.stdout.read().splitlines()
        _, status, usage = os.wait4(child.pid, 0)
        got = json.loads(lines[-1])
        rows = sum(1 for _ in open(out, encoding="utf-8"))
        assert status == 0 and got["status"] == 0 and rows == n
        other = got["predict_seconds"] - got["forward_seconds"]
        results[str(n)] = {"lines": n, "input_mb": src.stat().st_size / 1e6, "output_mb": out.stat().st_size / 1e6,
                           "process_wall_seconds": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024,
                           **got, "beyond_forward_seconds": other, "beyond_forward_share": other / got["predict_seconds"]}
        print(json.dumps(results[str(n)]), flush=True)
    save("predict_stream", {"model": "gpt2 4 layers x 256 (random weights, 10 steps)", "results": results})


if __name__ == "__main__":
    main()
