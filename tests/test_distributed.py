"""Data parallelism under torchrun, for real: 2 CPU processes (gloo) against 1, tiny random GPT-2 and
Llama shapes. Same per-step losses and predictions, resume on another number of processes, a
restart after a killed worker, sharded prediction joined in order, two "nodes" on localhost, and
failures that end the job instead of hanging it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SHARED_DATA, sms_texts
from helpers import gpt2_tokenizer_json, interrupt_after_epoch
from gptclassify.cli import main
from gptclassify.inference.predict import Classifier

transformers = pytest.importorskip("transformers")

TIMEOUT_S = 30  # GPTCLASSIFY_DIST_TIMEOUT in these tests: the longest a stuck collective may wait


@pytest.fixture(autouse=True)
def torchrun_tmpdir(tmp_path_factory, monkeypatch):
    """torchrun's agent writes a `torchelastic_*` folder into TMPDIR and leaves it there: keep it
    under pytest's own temporary folder, which is removed after a passing session."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("torchrun-tmp")))


def torchrun_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GPTCLASSIFY_DIST_TIMEOUT": str(TIMEOUT_S),
            "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED_DATA / "gpt2"), "PYTHONUNBUFFERED": "1"}


def torchrun(*args, launch=("--standalone", "--nproc-per-node", "2"), **popen) -> subprocess.Popen:
    """`torchrun LAUNCH -m gptclassify ARGS` as its own process group (so a test can stop all of it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "gptclassify", *map(str, args)]
    return subprocess.Popen(cmd, env=torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def finish(proc: subprocess.Popen, timeout=240) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not end within {timeout}s:\n{out[-3000:]}")
    return proc.returncode, out


def run_ok(*args, **kw) -> str:
    code, out = finish(torchrun(*args, **kw))
    assert code == 0, out[-3000:]
    return out


def small_llama_dir(tmp_path: Path) -> Path:
    """A tiny Llama (GQA, RoPE, SwiGLU, RMSNorm) over GPT-2's vocabulary, random weights, HF layout."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    gpt2_tokenizer_json(tmp_path / "llama" / "tokenizer.json")
    return tmp_path / "llama"


def train_args(data, weights, out, *extra):
    """A train command. The frozen prefix in float32 whatever `auto` would pick on this CPU: these tests
    compare runs to 1e-5, and a bfloat16 prefix rounds differently as a batch's shape changes."""
    return [str(a) for a in ["train", "--data", data, "--weights", weights, "--out", out,
                             "--prefix-dtype", "float32", *extra]]


def history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def assert_same_training(a: Path, b: Path, texts: list[str]):
    la, lb = history(a)["step_loss"], history(b)["step_loss"]
    assert len(la) == len(lb) > 0
    assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    pa = Classifier.load(a, "cpu").predict(texts)
    pb = Classifier.load(b, "cpu").predict(texts)
    assert [p["label"] for p in pa] == [p["label"] for p in pb]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(pa, pb)) < 1e-4
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    for split in ("train", "validation", "test"):
        assert ma[split]["confusion_matrix"] == mb[split]["confusion_matrix"]
    assert (ma["training"]["processes"], mb["training"]["processes"]) == (1, 2)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_two_processes_take_the_single_process_steps(family, data_dir, weights_dir, tmp_path):
    """GPT-2 with the feature cache (last block); Llama uncached with every layer training."""
    if family == "gpt2":
        weights, extra = weights_dir, ["--epochs", "2", "--eval-freq", "5"]
    else:
        weights, extra = small_llama_dir(tmp_path), ["--epochs", "2", "--trainable", "all", "--lr", "1e-3"]
    assert main(train_args(data_dir, weights, tmp_path / "one", *extra)) == 0
    out = run_ok(*train_args(data_dir, weights, tmp_path / "two", *extra))
    assert "data parallel: 2 processes (gloo)" in out
    assert out.count("epoch 1:") == 1  # only rank 0 logs
    ea, eb = history(tmp_path / "one")["eval"], history(tmp_path / "two")["eval"]
    assert [e["step"] for e in ea] == [e["step"] for e in eb]
    assert max(abs(x[k] - y[k]) for x, y in zip(ea, eb) for k in ("train_loss", "val_loss")) < 1e-5
    assert_same_training(tmp_path / "one", tmp_path / "two", sms_texts()[:200])
    assert not list((tmp_path / "two").glob(".*.tmp"))
    if family == "gpt2":  # evaluate, sharded and joined, reports what one process reports
        out = run_ok("evaluate", tmp_path / "two", "--data", data_dir, "--split", "test")
        sharded = json.loads(out[out.index("{"): out.rindex("}") + 1])
        alone = json.loads((tmp_path / "two" / "metrics.json").read_text())["test"]
        assert sharded["confusion_matrix"] == alone["confusion_matrix"]
        assert abs(sharded["loss"] - alone["loss"]) < 1e-5


def checkpointed_epochs(run: Path) -> int:
    """Epochs done in the checkpoint in force (0 before the first epoch's)."""
    try:
        latest = json.loads((run / "checkpoint" / "latest.json").read_text())["snapshot"]
        state = json.loads((run / "checkpoint" / latest / "state.json").read_text())["train_state"]
    except (OSError, ValueError, KeyError):
        return 0
    return state["epoch"] if state else 0


def wait_for_first_epoch(run: Path, proc: subprocess.Popen, timeout=120):
    deadline = time.monotonic() + timeout
    while checkpointed_epochs(run) < 1:
        assert proc.poll() is None, "the job ended before the first epoch's checkpoint appeared"
        assert time.monotonic() < deadline, "no checkpoint of a finished epoch appeared"
        time.sleep(0.01)


def worker_pids(proc: subprocess.Popen) -> list[int]:
    """The worker processes torchrun started (children of its agent)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_worker_fails_the_job_and_the_run_resumes_on_one_process(data_dir, weights_dir, tmp_path):
    extra = ["--epochs", "8", "--no-cache", "--lr-schedule", "cosine", "--warmup-steps", "3"]
    assert main(train_args(data_dir, weights_dir, tmp_path / "straight", *extra)) == 0

    run = tmp_path / "killed"
    proc = torchrun(*train_args(data_dir, weights_dir, run, *extra))
    wait_for_first_epoch(run, proc)
    started = time.monotonic()
    os.kill(worker_pids(proc)[-1], signal.SIGKILL)
    code, out = finish(proc)
    assert code != 0 and time.monotonic() - started < TIMEOUT_S, out[-2000:]
    assert not (run / "config.json").exists()  # nothing looks finished
    assert 1 <= checkpointed_epochs(run) < 8

    assert main(["train", "--resume", str(run)]) == 0  # one process finishes what two started
    a, b = history(tmp_path / "straight")["step_loss"], history(run)["step_loss"]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    wa, wb = load_file(tmp_path / "straight" / "model.safetensors"), load_file(run / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_restart_after_a_killed_worker_continues_from_the_last_epoch(data_dir, weights_dir, tmp_path):
    extra = ["--epochs", "8", "--no-cache"]
    one = tmp_path / "one"
    assert main(train_args(data_dir, weights_dir, one, *extra)) == 0
    run = tmp_path / "restarted"
    proc = torchrun(*train_args(data_dir, weights_dir, run, *extra),
                    launch=("--standalone", "--nproc-per-node", "2", "--max-restarts", "1"))
    wait_for_first_epoch(run, proc)
    os.kill(worker_pids(proc)[0], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    assert "resuming after epoch" in out
    a, b = history(one)["step_loss"], history(run)["step_loss"]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def test_resume_on_two_processes_a_run_begun_on_one(data_dir, weights_dir, tmp_path, monkeypatch):
    from gptclassify.training.run import train_run
    from gptclassify.config import make_config

    cfg = make_config(None, epochs=3, lr_schedule="cosine", warmup_steps=3, prefix_dtype="float32")
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "straight", log=lambda *a: None)

    interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=lambda *a: None)
    out = run_ok("train", "--resume", tmp_path / "run")
    assert "resuming after epoch 1" in out
    a, b = history(tmp_path / "straight")["step_loss"], history(tmp_path / "run")["step_loss"]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def many_texts(n=20_000) -> list[str]:
    """Real messages, made distinct and one per line."""
    sms = [t.replace("\n", " ") for t in sms_texts()]
    return [f"{sms[i % len(sms)]} #{i}" if i >= len(sms) else sms[i] for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_under_torchrun_equals_one_process(data_dir, weights_dir, tmp_path, suffix):
    run = tmp_path / "run"
    assert main(train_args(data_dir, weights_dir, run, "--epochs", "1", "--max-steps", "3")) == 0
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(many_texts()) + "\n", encoding="utf-8")
    one, two = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    assert main(["predict", str(run), "--input", str(texts), "--output", str(one), "--batch-size", "64"]) == 0
    run_ok("predict", run, "--input", texts, "--output", two, "--batch-size", "64")
    a, b = one.read_text(encoding="utf-8").splitlines(), two.read_text(encoding="utf-8").splitlines()
    assert len(a) == 20_000 + (suffix == ".csv")
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no parts left behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost(data_dir, weights_dir, tmp_path):
    """Two torchrun invocations, one process each, meeting at a c10d rendezvous on 127.0.0.1."""
    extra = ["--epochs", "2"]
    assert main(train_args(data_dir, weights_dir, tmp_path / "one", *extra)) == 0
    launch = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "two-nodes")
    nodes = [torchrun(*train_args(data_dir, weights_dir, tmp_path / "two", *extra), launch=launch) for _ in range(2)]
    for code, out in [finish(n) for n in nodes]:
        assert code == 0, out[-3000:]
    assert_same_training(tmp_path / "one", tmp_path / "two", sms_texts()[:100])


def test_a_node_with_bad_input_stops_the_job_with_its_error(data_dir, weights_dir, tmp_path):
    """One node lacks the data directory: it says so in one line, and the other node stops too."""
    launch = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "bad-node")
    started = time.monotonic()
    good = torchrun(*train_args(data_dir, weights_dir, tmp_path / "run"), launch=launch)
    bad = torchrun(*train_args(tmp_path / "missing", weights_dir, tmp_path / "run"), launch=launch)
    (code_good, _), (code_bad, out_bad) = finish(good), finish(bad)
    assert code_good != 0 and code_bad != 0
    assert time.monotonic() - started < 2 * TIMEOUT_S
    errors = [line for line in out_bad.splitlines() if line.startswith("gptclassify: error:")]
    assert errors == [f"gptclassify: error: [rank {errors[0].split('rank ')[1][0]}] {tmp_path / 'missing'}: "
                      "no dataset.json (make the directory with `gptclassify prepare`)"]
    assert not (tmp_path / "run" / "config.json").exists()


def test_commands_that_run_alone_refuse_torchrun(tmp_path):
    code, out = finish(torchrun("prepare", "sms-spam", "--out", tmp_path / "d", "--source", SHARED_DATA / "SMSSpamCollection"))
    assert code != 0
    assert "gptclassify: error: [rank 0] 'prepare' runs in one process" in out
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("task", ["multi-label", "regression", "pairs", "chunks", "chunks-multi-label"])
def test_label_shapes_take_the_same_steps_on_two_processes_and_after_a_resume(task, weights_dir, tmp_path, monkeypatch):
    """A set of labels, a number per text, a pair of texts, long texts read in windows (batched by
    length): 2 processes
    take the single-process steps, and a run interrupted after its first epoch resumes to the same
    weights bit for bit."""
    from test_chunks import long_rows
    from test_tasks import pair_rows, sms_rows, tags_of, write_csv

    from gptclassify.config import make_config
    from gptclassify.training.run import train_run

    chunks = {"truncation": "chunks", "max_length": 24, "max_chunks": 3} if task.startswith("chunks") else {}
    if task == "chunks":  # texts of 1 to 3 windows: batched by length from every process's lengths
        chunks["batch_order"] = "by-length"
    if task == "pairs":
        src = write_csv(tmp_path / "data.csv", pair_rows(), ("text", "other", "label"))
        prepare = ["--text-pair-column", "other"]
    elif task.startswith("chunks"):
        shape = "multi-label" if task == "chunks-multi-label" else "single-label"
        src, prepare = write_csv(tmp_path / "data.csv", long_rows(shape)), ["--label-column", "tags", "--task", shape]
    else:
        rows = [(t, tags_of(t) if task == "multi-label" else str(len(t.split()))) for t in sms_rows()]
        src, prepare = write_csv(tmp_path / "data.csv", rows), ["--label-column", "tags", "--task", task]
    assert main(["prepare", "csv", str(src), *prepare, "--out", str(tmp_path / "d")]) == 0
    data, extra = tmp_path / "d", ["--epochs", "2", "--eval-freq", "5", "--lr", "1e-3"]
    extra += [a for k, v in chunks.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(train_args(data, weights_dir, tmp_path / "one", *extra)) == 0
    run_ok(*train_args(data, weights_dir, tmp_path / "two", *extra))
    la, lb = history(tmp_path / "one")["step_loss"], history(tmp_path / "two")["step_loss"]
    assert len(la) == len(lb) > 0 and max(abs(x - y) for x, y in zip(la, lb)) < 1e-5
    texts = sms_texts()[:100]
    texts = list(zip(texts, reversed(texts))) if task == "pairs" else texts
    texts = [" ".join(texts[i:i + 6]) for i in range(0, 100, 4)] if chunks else texts
    pa, pb = (Classifier.load(tmp_path / r, "cpu").probabilities(texts) for r in ("one", "two"))
    assert (pa - pb).abs().max().item() < 1e-4
    ma, mb = (json.loads((tmp_path / r / "metrics.json").read_text())["test"] for r in ("one", "two"))
    assert abs(ma["loss"] - mb["loss"]) < 1e-5

    cfg = make_config(None, epochs=2, lr=1e-3, prefix_dtype="float32", **chunks)
    train_run(None, str(weights_dir), data, cfg, tmp_path / "straight", log=lambda *a: None)
    interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(None, str(weights_dir), data, cfg, tmp_path / "resumed", log=lambda *a: None)
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 0
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = (json.loads((tmp_path / r / "config.json").read_text()) for r in ("straight", "resumed"))
    assert (ca["thresholds"], ca["target_scale"], ca["task"]) == (cb["thresholds"], cb["target_scale"], cb["task"])
