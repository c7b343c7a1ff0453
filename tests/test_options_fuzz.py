"""No traceback from any option or variable: every numeric option of `prepare`, `train` (the chunk
windows' too), `tune`, `predict` and `evaluate`, and the GPTCLASSIFY_* numbers, driven with random
values (any sign, zero, huge, not finite, not numbers, empty) on a tiny model. Each run ends with
exit 0, or one line `gptclassify: error: ...` and a non-zero exit."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptclassify.cli import main
from gptclassify.errors import UserError, env_number
from helpers import sms_slice_dir

NASTY = ["0", "-1", "1", "3", "100000", str(2 ** 63), str(2 ** 70), "1e30", "-1e-30", "nan", "inf", "-inf", "", "x",
         "0.5", "1.5", "1e400"]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.integers(-3, 40).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)
TRAIN_OPTIONS = ["--epochs", "--batch-size", "--lr", "--weight-decay", "--seed", "--lora-rank", "--lora-alpha",
                 "--lora-dropout", "--lora-blocks", "--max-length", "--eval-freq", "--eval-iter", "--grad-clip",
                 "--warmup-steps", "--max-steps", "--checkpoint-every", "--early-stopping", "--batch-order"]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def outcome(argv: list[str], env: dict | None = None) -> tuple[int, str]:
    """Exit status and standard error of `gptclassify ARGV` run in this process."""
    err = io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, err.getvalue()


def assert_clean(code: int, err: str, argv) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        return
    assert len(lines) == 1 and lines[0].startswith("gptclassify: error: "), (argv, code, err[-2000:])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, weights_dir):
    """20 real messages and a finished run on them."""
    tmp = tmp_path_factory.mktemp("fuzz")
    data = sms_slice_dir(tmp, n_ham=12, n_spam=8)
    run = tmp / "run"
    code, err = outcome(["train", "--data", str(data), "--weights", str(weights_dir), "--out", str(run),
                         "--epochs", "1", "--max-steps", "2"])
    assert code == 0, err
    return data, weights_dir, run, tmp


def train_argv(tiny, option: str, value: str, lora: bool) -> list[str]:
    data, weights, _, tmp = tiny
    return ["train", "--data", str(data), "--weights", str(weights), "--out", str(tmp / "fuzz-run"), "--overwrite",
            "--epochs", "1", "--max-steps", "3", "--eval-freq", "2", "--prefix-dtype", "float32",
            *(["--trainable", "lora", "--lora-rank", "2"] if lora else []), option, value]


@pytest.mark.parametrize("option", TRAIN_OPTIONS)
def test_train_options_at_their_edges(tiny, option):
    """Every option with every value of NASTY (with LoRA on for its own options)."""
    for value in NASTY:
        argv = train_argv(tiny, option, value, lora=option.startswith("--lora"))
        assert_clean(*outcome(argv), argv)


@settings(FUZZ, max_examples=60)
@given(option=st.sampled_from(TRAIN_OPTIONS), value=VALUES, lora=st.booleans())
def test_train_options(tiny, option, value, lora):
    argv = train_argv(tiny, option, value, lora)
    assert_clean(*outcome(argv), argv)


@pytest.mark.parametrize("option", ["--max-chunks", "--chunk-overlap"])
def test_chunk_options_at_their_edges(tiny, option):
    """The window options of --truncation chunks, with every value of NASTY."""
    for value in NASTY:
        argv = train_argv(tiny, "--truncation", "chunks", lora=False) + ["--max-length", "16", option, value]
        assert_clean(*outcome(argv), argv)


@settings(FUZZ, max_examples=12)
@given(option=st.sampled_from(["--folds", "--budget"]), value=VALUES)
def test_tune_options(tiny, option, value):
    data, weights, _, tmp = tiny
    other = ["--budget", "1s"] if option == "--folds" else ["--folds", "2"]  # the rest kept small: a short tune
    argv = ["tune", "--data", str(data), "--weights", str(weights), "--out", str(tmp / "fuzz-tune"), "--overwrite",
            "--prefix-dtype", "float32", *other, option, value]
    assert_clean(*outcome(argv), argv)


@settings(FUZZ, max_examples=40)
@given(option=st.sampled_from(["--val-frac", "--test-frac", "--seed", "--encoding"]), value=VALUES,
       kind=st.sampled_from(["csv", "folder"]))
def test_prepare_options(tiny, option, value, kind):
    """`prepare csv` and `prepare folder` share their split options: each value exits 0 or says why in one line."""
    data, _, _, tmp = tiny
    source = data / "train.csv" if kind == "csv" else class_folder(data, tmp / "fuzz-folder")
    argv = ["prepare", kind, str(source), "--out", str(tmp / "fuzz-data"), option, value]
    assert_clean(*outcome(argv), argv)


def class_folder(data, root):
    """The training texts of `data`, one file each under root/<label>/ (made once)."""
    if not root.is_dir():
        import pandas as pd

        for i, row in pd.read_csv(data / "train.csv", keep_default_na=False).iterrows():
            (root / row["label"]).mkdir(parents=True, exist_ok=True)
            (root / row["label"] / f"{i:04d}.txt").write_text(row["text"], encoding="utf-8")
    return root


@settings(FUZZ, max_examples=30)
@given(value=VALUES, split=st.sampled_from(["test", "validation", "nope"]))
def test_predict_and_evaluate_options(tiny, value, split):
    data, _, run, _ = tiny
    for argv in (["predict", str(run), "--batch-size", value, "see you at 5"],
                 ["predict", str(run), "--min-score", value, "see you at 5"],
                 ["predict", str(run), "--input", str(data / "train.csv"), "--text-column", "text", "--encoding", value],
                 ["evaluate", str(run), "--data", str(data), "--split", split, "--device", value or "cpu"]):
        assert_clean(*outcome(argv), argv)


@settings(FUZZ, max_examples=12)
@given(value=VALUES, fmt=st.sampled_from(["transformers", "onnx", "tflite", ""]))
def test_export_and_backend_options(tiny, value, fmt):
    """`export`'s --format and --out (a name under a scratch folder, whatever the string), and
    predict's --backend and --device beside it: exit 0 or one error line."""
    _, _, run, tmp = tiny
    for argv in (["export", str(run), "--format", fmt if fmt != "onnx" else "transformers", "--out",
                  str(tmp / "exports" / value), "--overwrite"],
                 ["predict", str(run), "--backend", value or "onnxruntime", "--device", "cpu", "hi"],
                 ["predict", str(tmp / "exports" / value), "--backend", "onnxruntime", "--device", value or "x", "hi"]):
        assert_clean(*outcome(argv), argv)


@settings(FUZZ, max_examples=30)
@given(name=st.sampled_from(["GPTCLASSIFY_CACHE_MEMORY", "GPTCLASSIFY_FEATURE_CACHE_GB", "GPTCLASSIFY_FAILPOINT"]),
       value=VALUES)
def test_variables(tiny, name, value):
    data, weights, _, tmp = tiny
    if name == "GPTCLASSIFY_FAILPOINT":  # a real failpoint kills the process on purpose: only malformed ones here
        value = f"step:{value}" if not value.isdigit() else "no-such-point"
    argv = ["train", "--data", str(data), "--weights", str(weights), "--out", str(tmp / "env-run"), "--overwrite",
            "--epochs", "1", "--max-steps", "2", "--prefix-dtype", "float32"]
    assert_clean(*outcome(argv, {name: value}), argv)


@pytest.mark.parametrize("raw", ["", "x", "nan", "inf", "-5", "0"])
def test_the_distributed_timeout_is_checked_in_one_line(raw, monkeypatch):
    monkeypatch.setenv("GPTCLASSIFY_DIST_TIMEOUT", raw)
    with pytest.raises(UserError, match="GPTCLASSIFY_DIST_TIMEOUT"):
        env_number("GPTCLASSIFY_DIST_TIMEOUT", 1800, "a number of seconds", minimum=1)


def test_the_four_tracebacks_of_the_issue_are_one_line_errors(tiny, tmp_path):
    data, weights, _, _ = tiny
    base = ["train", "--data", str(data), "--weights", str(weights), "--out", str(tmp_path / "r"), "--epochs", "1",
            "--max-steps", "2"]
    for extra, says in ((["--eval-iter", "0"], "--eval-iter"), (["--weight-decay", "-1"], "--weight-decay"),
                        (["--max-length", "0"], "--max-length")):
        code, err = outcome([*base, *extra])
        assert code == 1 and err.strip().startswith("gptclassify: error: " + says), err
    long = tmp_path / "long.jsonl"  # texts longer than the model's 1,024 positions, --max-length 2000
    long.write_text("".join(f'{{"text": "{" ".join(["word"] * 1500)} {i}", "label": "{"ab"[i % 2]}"}}\n'
                            for i in range(12)))
    assert outcome(["prepare", "csv", str(long), "--out", str(tmp_path / "long")])[0] == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--data", str(tmp_path / "long"), "--weights", str(weights), "--out",
                     str(tmp_path / "long-run"), "--epochs", "1", "--max-steps", "1", "--max-length", "2000"])
    assert code == 0 and "--max-length 2000 is beyond the model's context of 1024 tokens" in out.getvalue()


def test_a_config_with_no_heads_is_refused_in_one_line(tiny, tmp_path):
    import json
    import shutil

    _, _, run, _ = tiny
    broken = Path(shutil.copytree(run, tmp_path / "broken"))
    config = json.loads((broken / "config.json").read_text())
    config["model"]["n_heads"] = 0
    (broken / "config.json").write_text(json.dumps(config))
    code, err = outcome(["predict", str(broken), "hello"])
    assert code == 1 and "n_heads must be a positive whole number" in err and len(err.strip().splitlines()) == 1
