"""`predict --input FILE --output FILE` reads and writes chunk by chunk: the same predictions as
`Classifier.predict`, in input order; killed midway, the same command continues after the last
finished chunk instead of starting again; parts of another input are not reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SHARED_DATA
from gptclassify import Classifier
from gptclassify.cli import main
from gptclassify.inference.predict_file import CHUNK
from gptclassify.training.run import train_run
from gptclassify.config import make_config


@pytest.fixture(scope="module")
def run(data_dir, weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "run"
    cfg = make_config(None, epochs=1, max_steps=4, prefix_dtype="float32")  # scores compared to 1e-6, on any CPU
    train_run(None, str(weights_dir), data_dir, cfg, out, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def texts(sms):
    """5,000 lines: two full chunks and a partial third."""
    return [sms[i % len(sms)] + ("" if i < len(sms) else f" #{i}") for i in range(5000)]


def predict_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptclassify", "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED_DATA / "gpt2"), **(env or {})})


def test_the_streamed_output_is_classifier_predict_in_input_order(run, texts, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts[:2500]) + "\n\n" + "\n".join(texts[2500:]) + "\n", encoding="utf-8")
    assert main(["predict", str(run), "--input", str(src), "--output", str(tmp_path / "out.jsonl")]) == 0
    assert "skipped 1 blank line(s)" in capsys.readouterr().err
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = Classifier.load(run, "cpu").predict(texts)
    assert [g["text"] for g in got] == texts
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert max(abs(g["score"] - e["score"]) for g, e in zip(got, expected)) < 1e-6
    assert not list(tmp_path.glob(".out.jsonl.parts"))


def test_a_csv_input_streams_its_column(run, texts, tmp_path):
    import pandas as pd

    pd.DataFrame({"id": range(300), "body": texts[:300]}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["predict", str(run), "--input", str(tmp_path / "in.csv"), "--text-column", "body",
                 "--output", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["text"].tolist() == texts[:300] and len(out.columns) == 3 + 2


def test_a_killed_prediction_continues_after_its_last_finished_chunk(run, texts, tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    straight = tmp_path / "straight.jsonl"
    assert predict_cli(run, "--input", src, "--output", straight).returncode == 0

    killed = predict_cli(run, "--input", src, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:2"})
    assert killed.returncode == -9 and not out.exists()
    parts = tmp_path / ".out.jsonl.parts"
    first_two = sorted(p.name for p in parts.glob("chunk-*"))
    assert first_two == ["chunk-00000000", "chunk-00000001"]

    resumed = predict_cli(run, "--input", src, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:2"})
    # the same failpoint again: had the finished chunks been computed again, its second pass would kill
    # this run too; it finishes, so only the third chunk was computed
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"continuing an interrupted prediction: 2 chunks of {CHUNK:,} texts already done" in resumed.stderr
    assert out.read_bytes() == straight.read_bytes()
    assert not parts.exists()


def test_parts_of_another_input_are_not_reused(run, texts, tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    killed = predict_cli(run, "--input", src, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:1"})
    assert killed.returncode == -9
    src.write_text("\n".join(reversed(texts)) + "\n", encoding="utf-8")  # the input changed meanwhile
    again = predict_cli(run, "--input", src, "--output", out)
    assert again.returncode == 0 and "starting afresh" in again.stderr
    got = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert got == list(reversed(texts))


def test_a_killed_folder_prediction_continues_and_a_changed_folder_starts_afresh(run, texts, tmp_path):
    """A folder's files (here 4,200: three chunks) are chunked as a file's lines are; the parts
    remember the folder's listing (paths, sizes, modification times)."""
    folder, out, straight = tmp_path / "docs", tmp_path / "out.csv", tmp_path / "straight.csv"
    for i, text in enumerate(texts[:4200]):
        (folder / f"{i // 1000}").mkdir(parents=True, exist_ok=True)
        (folder / f"{i // 1000}" / f"{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
    assert predict_cli(run, "--input", folder, "--output", straight).returncode == 0
    killed = predict_cli(run, "--input", folder, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:2"})
    assert killed.returncode == -9 and not out.exists()
    resumed = predict_cli(run, "--input", folder, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:2"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # killed again had it computed the first two again
    assert "continuing an interrupted prediction: 2 chunks" in resumed.stderr
    assert out.read_bytes() == straight.read_bytes()
    assert out.read_text().splitlines()[1].startswith("0/0000.txt,")

    out.unlink()
    killed = predict_cli(run, "--input", folder, "--output", out, env={"GPTCLASSIFY_FAILPOINT": "predict-chunk:1"})
    assert killed.returncode == -9
    (folder / "4" / "4199.txt").write_text("a changed text\n", encoding="utf-8")
    again = predict_cli(run, "--input", folder, "--output", out)
    assert again.returncode == 0 and "starting afresh" in again.stderr
    assert out.read_text().splitlines()[-1].startswith("4/4199.txt,")
