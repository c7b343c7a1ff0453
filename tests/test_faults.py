"""Training survives being killed and failed writes: a real `gptclassify train` process is killed
with SIGKILL at chosen moments (failpoints), or runs under a file-size limit, then resumed; the
resumed run must end bit for bit where an uninterrupted one ends, and nothing finished is lost."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SHARED_DATA
from gptclassify.cli import main

pytest.importorskip("transformers")


TRAIN = ["--epochs", "3", "--checkpoint-every", "6", "--lr-schedule", "cosine", "--warmup-steps", "4",
         "--eval-freq", "5", "--keep-best"]


def train_args(data_dir, weights_dir, run) -> list[str]:
    return ["train", "--data", str(data_dir), "--weights", str(weights_dir), "--out", str(run), *TRAIN]


@pytest.fixture(scope="module")
def straight(data_dir, weights_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(train_args(data_dir, weights_dir, run)) == 0
    return run


def gptclassify(*args, env=None, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptclassify", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED_DATA / "gpt2"), **(env or {})},
                          preexec_fn=preexec_fn, timeout=300)


def assert_same_run(a: Path, b: Path):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    ha, hb = (json.loads((r / "history.json").read_text()) for r in (a, b))
    assert ha["step_loss"] == hb["step_loss"] and ha["eval"] == hb["eval"]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in ha["epochs"]] == \
        [{k: v for k, v in e.items() if k != "seconds"} for e in hb["epochs"]]
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    for split in ("train", "validation", "test"):
        assert ma[split] == mb[split]
    assert ma["training"]["best_epoch"] == mb["training"]["best_epoch"]


# step 20 is mid-epoch 2 (14 steps an epoch), two steps after the mid-epoch checkpoint at step 18;
# checkpoint:4 dies inside the fourth save, after its files and before it is made the latest.
KILL_POINTS = ["frozen-pass", "step:3", "step:20", "step:28", "checkpoint:4", "evaluation", "run-write"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_resumes_to_the_same_end(point, data_dir, weights_dir, straight, tmp_path):
    run = tmp_path / "run"
    done = gptclassify(*train_args(data_dir, weights_dir, run), env={"GPTCLASSIFY_FAILPOINT": point})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (run / "config.json").exists()  # a killed run never looks finished
    resumed = gptclassify("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(straight, run)
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert len(list((run / "checkpoint").glob("snapshot-*"))) == 1  # a half-written snapshot is cleared away


def file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("limit, fails_at", [(300_000, "checkpoint"), (2_000_000, "model.safetensors")])
def test_a_failed_write_keeps_the_last_checkpoint(limit, fails_at, data_dir, weights_dir, straight, tmp_path):
    """Under a file-size limit the first checkpoint (300 kB: its optimizer state is too big) or the
    finished model (2 MB) cannot be written: one line, exit 1, the last checkpoint in force."""
    run = tmp_path / "run"
    done = gptclassify(*train_args(data_dir, weights_dir, run), preexec_fn=file_size_limit(limit))
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptclassify: error:") and fails_at in lines[0], done.stderr
    assert "File too large" in lines[0]
    assert not (run / "config.json").exists()
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())
    state = json.loads((run / "checkpoint" / latest["snapshot"] / "state.json").read_text())
    if fails_at == "checkpoint":  # the first snapshot, written before training, is still the one in force
        assert state["train_state"] is None
    else:
        assert state["train_state"]["global_step"] == 42 and state["train_state"]["epoch"] == 3
    resumed = gptclassify("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(straight, run)


def test_a_finished_run_is_not_touched_by_a_failed_overwrite(data_dir, weights_dir, straight, tmp_path):
    """A new run over a finished one without --overwrite is refused before anything is written."""
    before = {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file()}
    assert main(train_args(data_dir, weights_dir, straight)) == 1
    assert {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file()} == before
