"""One process with 2 threads against 2 processes with 1 thread each (torchrun, gloo) on this machine:
the frozen pass, training and prediction, with the results compared and the communication counted.

    ../.venv/bin/python distributed.py [--epochs 5] [--predict-texts 3000]

GPT-2 124M with random weights on the book's SMS split (the architecture decides the time, not the
weights). On 2 cores the two layouts use the same arithmetic units, so the point is correctness and
overhead: the same losses and predictions, and what data parallelism costs. From the measured
per-step volume, and stated assumptions about GPUs and links, the script also estimates a
1,000,000-message job at 8 GPUs and at 4 nodes x 8 GPUs (an estimate, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, book_split, save, scratch_dir, sms_messages

# Assumptions of the estimate (stated in benchmarks/README.md beside its result).
GPU_FLOPS = 400e12  # bf16 FLOP/s one H100 sustains on GPT-2 124M's matrix products (about 40% of peak)
NVLINK_BYTES_S = 150e9  # all-reduce bus bandwidth inside one 8-GPU node
NETWORK_BYTES_S = 40e9  # all-reduce bus bandwidth across nodes (4 x 100 Gb/s InfiniBand per node)
TOKENS_PER_MESSAGE = 40  # the SMS mean is about 36 GPT-2 tokens
GLOBAL_BATCH_AT_SCALE = 256
STEP_OVERHEAD_S = 0.005  # per optimizer step on a GPU: kernel launches, Python, the loader


def gptclassify(*args, processes: int, threads: int, env=None) -> tuple[float, str]:
    launch = [sys.executable, "-m", "gptclassify"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
         "-m", "gptclassify"]
    started = time.perf_counter()
    done = subprocess.run([*launch, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def train(data: Path, run: Path, epochs: int, processes: int, threads: int) -> dict:
    wall, log = gptclassify("train", "--data", data, "--model", "gpt2", "--weights", "random", "--out", run,
                            "--epochs", epochs, "--overwrite", processes=processes, threads=threads)
    frozen = float(re.search(r"feature cache: .* in ([0-9.]+)s", log).group(1))
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return {"wall_s": round(wall, 1), "frozen_pass_s": frozen, "train_s": round(metrics["training"]["seconds"], 1),
            "steps": metrics["training"]["steps"], "test_accuracy": metrics["test"]["accuracy"],
            "trainable_parameters": config["trainable_parameters"]}


def allreduce_probe(numel: int, repeats: int = 20) -> None:
    """Run under torchrun by `measure_allreduce`: rank 0 prints the mean seconds of one all-reduce."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    buffer = torch.ones(numel)
    dist.all_reduce(buffer)  # warm-up: connections, allocation
    dist.barrier()
    started = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(buffer)
    if dist.get_rank() == 0:
        print(f"allreduce_s {(time.perf_counter() - started) / repeats}")
    dist.destroy_process_group()


def measure_allreduce(numel: int) -> float:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           __file__, "--allreduce-probe", str(numel)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(re.search(r"allreduce_s ([0-9.e-]+)", done.stdout).group(1))


def estimate(trainable: int, messages=1_000_000) -> dict:
    """A stated estimate of the frozen pass and one epoch for `messages` at 8 and 32 GPUs."""
    flops_per_token = 2 * 85e6 + 2 * 12 * 768 * TOKENS_PER_MESSAGE  # non-embedding weights, plus attention
    frozen_gpu_s = messages * TOKENS_PER_MESSAGE * flops_per_token / GPU_FLOPS
    steps = messages // GLOBAL_BATCH_AT_SCALE
    volume = trainable * 4
    out = {}
    for name, gpus, bandwidth in (("8 GPUs (1 node)", 8, NVLINK_BYTES_S), ("32 GPUs (4 nodes x 8)", 32, NETWORK_BYTES_S)):
        ring = 2 * (gpus - 1) / gpus * volume / bandwidth  # a ring all-reduce moves 2(n-1)/n of the buffer
        suffix_s = steps * (GLOBAL_BATCH_AT_SCALE / gpus) * TOKENS_PER_MESSAGE * 3 * 2 * 7.1e6 / GPU_FLOPS
        cache_gb = messages * TOKENS_PER_MESSAGE * 768 * 4 / gpus / 1e9  # float32 features of the frozen prefix
        out[name] = {"frozen_pass_s": round(frozen_gpu_s / gpus, 1), "allreduce_ms_per_step": round(ring * 1e3, 2),
                     "feature_cache_gb_per_process": round(cache_gb, 1),
                     "epoch_s": round(suffix_s + steps * (ring + STEP_OVERHEAD_S), 1), "steps_per_epoch": steps,
                     "messages_per_s_frozen_pass": round(messages / (frozen_gpu_s / gpus))}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--predict-texts", type=int, default=3000)
    parser.add_argument("--save-as", default="distributed")
    parser.add_argument("--allreduce-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--estimate-only", action="store_true",
                        help="recompute the estimate from results/SAVE_AS.json (after changing an assumption)")
    args = parser.parse_args()
    if args.allreduce_probe:
        return allreduce_probe(args.allreduce_probe)
    if args.estimate_only:
        path = RESULTS / f"{args.save_as}.json"
        result = json.loads(path.read_text())
        result["estimate_1m_messages"] = estimate(result["runs"]["1 process x 2 threads"]["trainable_parameters"])
        path.write_text(json.dumps(result, indent=2))
        return print(json.dumps(result["estimate_1m_messages"], indent=2))

    work = scratch_dir("gptclassify-distributed-")
    data = book_split(work / "sms")
    rows = {}
    for name, processes, threads in (("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)):
        print(f"{name}: training ...", flush=True)
        rows[name] = train(data, work / f"run{processes}", args.epochs, processes, threads)

    one, two = (json.loads((work / f"run{p}" / "history.json").read_text())["step_loss"] for p in (1, 2))
    same = {"max_step_loss_difference": max(abs(a - b) for a, b in zip(one, two)),
            "same_test_confusion": json.loads((work / "run1" / "metrics.json").read_text())["test"]["confusion_matrix"]
            == json.loads((work / "run2" / "metrics.json").read_text())["test"]["confusion_matrix"]}

    texts = work / "texts.txt"
    sms = [t.replace("\n", " ") for t in sms_messages()]
    texts.write_text("\n".join(sms[i % len(sms)] for i in range(args.predict_texts)) + "\n", encoding="utf-8")
    for name, processes, threads in (("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)):
        print(f"{name}: predicting {args.predict_texts} texts ...", flush=True)
        out = work / f"pred{processes}.jsonl"
        rows[name]["predict_s"] = round(gptclassify("predict", work / "run1", "--input", texts, "--output", out,
                                                    processes=processes, threads=threads)[0], 1)
    same["same_predictions_bytes"] = (work / "pred1.jsonl").read_bytes() == (work / "pred2.jsonl").read_bytes()

    trainable = rows["1 process x 2 threads"]["trainable_parameters"]
    two = rows["2 processes x 1 thread"]
    two["allreduce_ms_measured"] = round(measure_allreduce(trainable + 1) * 1e3, 1)  # the gradients and the loss
    two["train_overhead_ms_per_step"] = round((two["train_s"] - rows["1 process x 2 threads"]["train_s"]) / two["steps"] * 1e3, 1)
    result = {"runs": rows, "agreement": same, "allreduce_bytes_per_step": trainable * 4,
              "estimate_1m_messages": estimate(trainable),
              "assumptions": {"gpu_flops": GPU_FLOPS, "nvlink_bytes_s": NVLINK_BYTES_S,
                              "network_bytes_s": NETWORK_BYTES_S, "tokens_per_message": TOKENS_PER_MESSAGE,
                              "global_batch": GLOBAL_BATCH_AT_SCALE,
                              "step_overhead_s": STEP_OVERHEAD_S},
              "command": " ".join(sys.argv), "epochs": args.epochs, "predict_texts": args.predict_texts}
    print(json.dumps(result, indent=2))
    print("saved", save(args.save_as, result))


if __name__ == "__main__":
    main()
