"""ONNX Runtime against our torch backend on this CPU, for GPT-2 124M and SmolLM2-135M: texts per
second over the SMS messages, peak memory of a process that loads the model and predicts them all,
and the start-up time of `serve` (process start to the first /healthz answer). Each measurement runs
in a fresh process; the torch backend is measured as a run computes (`auto`: a bfloat16 frozen
prefix where the CPU has bfloat16 units) and with a float32 prefix (the graph ONNX Runtime runs is
float32). Also records each export's own check against the run (transformers and ONNX).

    python benchmarks/onnx_speed.py [--models gpt2 smollm2] [--n 5574] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "gptclassify-bench"
SHARED = Path(os.environ.get("GPTCLASSIFY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ROWS = ("torch (run's prefix)", "torch (float32 prefix)", "onnxruntime")
# common.py imports torch: the measuring processes do not import it, so that the ONNX Runtime one never loads torch


def sms_messages() -> list[str]:
    with open(SHARED / "SMSSpamCollection", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


def smollm2_run() -> Path:
    """SmolLM2-135M-Instruct (real weights, its GGUF) fine-tuned for a few steps on the book split."""
    from common import book_split

    from gptclassify.config import make_config
    from gptclassify.training.run import train_run

    run = WORK / "run-smollm2"
    if not (run / "config.json").is_file():
        data = book_split(WORK / "sms", str(SHARED / "SMSSpamCollection"))
        train_run("smollm2-135m", "smollm2-135m-instruct-gguf", data, make_config(None, epochs=1, max_steps=20), run,
                  log=lambda *a: None)
    return run


def float32_copy(run: Path) -> Path:
    """The same run with its frozen prefix computed in float32 (config.json's prefix_dtype)."""
    out = run.with_name(run.name + "-fp32")
    if not out.is_dir():
        shutil.copytree(run, out)
        config = json.loads((out / "config.json").read_text())
        config["prefix_dtype"] = "float32"
        (out / "config.json").write_text(json.dumps(config))
    return out


def measure(backend: str, path: str, n: int, batch_size: int) -> None:
    """In this process: load, warm up, predict n SMS messages; print one JSON line."""
    started = time.perf_counter()
    if backend == "onnxruntime":
        from gptclassify.inference.onnx_runtime import OnnxClassifier

        clf = OnnxClassifier.load(path)
    else:
        from gptclassify.inference.predict import Classifier

        clf = Classifier.load(path, device="cpu")
    load_s = time.perf_counter() - started
    texts = sms_messages()[:n]
    clf.predict(texts[:64], batch_size=batch_size)
    started = time.perf_counter()
    labels = [p["label"] for p in clf.predict(texts, batch_size=batch_size)]
    seconds = time.perf_counter() - started
    print(json.dumps({"load_s": load_s, "seconds": seconds, "texts_per_s": len(texts) / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch_imported": "torch" in sys.modules, "labels": labels}))


def in_process(backend: str, path: Path, n: int, batch_size: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", backend, str(path), "--n", str(n),
                           "--batch-size", str(batch_size)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def serve_start_s(path: Path, backend: str) -> float:
    from common import serving

    started = time.perf_counter()
    with serving(path, "--backend", backend):
        return time.perf_counter() - started


def export(run: Path, fmt: str, out: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gptclassify", "export", str(run), "--format", fmt, "--out", str(out),
                           "--overwrite"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    check = next(line for line in done.stderr.splitlines() if "Largest score difference" in line)
    return time.perf_counter() - started, check.split("; ", 1)[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["gpt2", "smollm2"], choices=["gpt2", "smollm2"])
    parser.add_argument("--n", type=int, default=5574)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--save-as", default="onnx_speed")
    parser.add_argument("--measure", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(*args.measure, args.n, args.batch_size)
    from common import benchmark_run, machine, save

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "n": args.n,
               "batch_size": args.batch_size, "models": {}}
    for name in args.models:
        run = benchmark_run(WORK) if name == "gpt2" else smollm2_run()
        fp32 = float32_copy(run)
        export_s, onnx_check = export(run, "onnx", WORK / f"{name}-onnx")
        _, hf_check = export(run, "transformers", WORK / f"{name}-hf")
        shutil.rmtree(WORK / f"{name}-hf")
        rows = {"torch (run's prefix)": (run, "torch"), "torch (float32 prefix)": (fp32, "torch"),
                "onnxruntime": (WORK / f"{name}-onnx", "onnxruntime")}
        rows = {row: where for row, where in rows.items() if row in args.rows}
        best = {}
        for _ in range(args.repeats):  # alternating, so a noisy neighbour hits every row alike
            for row, (path, backend) in rows.items():
                got = in_process(backend, path, args.n, args.batch_size)
                got["serve_start_s"] = serve_start_s(path, backend)
                old = best.get(row)
                best[row] = got if old is None else {
                    **got, **{k: min(old[k], got[k]) for k in ("seconds", "load_s", "peak_rss_mb", "serve_start_s")},
                    "texts_per_s": max(old["texts_per_s"], got["texts_per_s"])}
        base = best.get("torch (run's prefix)") or next(iter(best.values()))
        base_labels = base["labels"]
        for row in best.values():
            row["speed_vs_torch"] = row["texts_per_s"] / base["texts_per_s"]
            row["label_agreement"] = sum(a == b for a, b in zip(row.pop("labels"), base_labels)) / args.n
        results["models"][name] = {"prefix_dtype": json.loads((run / "config.json").read_text())["prefix_dtype"],
                                   "onnx_export_s": export_s, "onnx_check": onnx_check,
                                   "transformers_check": hf_check, "rows": best}
        print(json.dumps({name: results["models"][name]}, indent=1))
    print(f"wrote {save(args.save_as, results)}")
    table(results)


def table(results: dict) -> None:
    print("| model | backend | texts/s | × torch | peak RSS MB | serve start s | labels as torch's |")
    print("|---|---|---|---|---|---|---|")
    for name, m in results["models"].items():
        for row, r in m["rows"].items():
            print(f"| {name} | {row} | {r['texts_per_s']:.1f} | {r['speed_vs_torch']:.2f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['serve_start_s']:.1f} | {r['label_agreement']:.2%} |")


if __name__ == "__main__":
    main()
