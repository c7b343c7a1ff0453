"""The on-disk feature cache: a later run that changes only training settings skips the frozen
pass and ends exactly where a run that computed it would; anything that changes the features
makes a new entry; a damaged entry is rebuilt, never read; the cache keeps to its size limit."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptclassify.cli import main
from gptclassify.training.feature_cache import cache_root, entries


def train(data_dir, weights, out, capsys, *extra) -> list[str]:
    """`gptclassify train` (2 epochs of a few steps); its log lines."""
    assert main(["train", "--data", str(data_dir), "--weights", str(weights), "--out", str(out),
                 "--epochs", "2", "--max-steps", "6", *map(str, extra)]) == 0
    return capsys.readouterr().out.splitlines()


def said(lines, start) -> list[str]:
    return [line for line in lines if line.startswith(start)]


def same_run(a, b) -> bool:
    """The same weights, step losses and evaluations, bit for bit."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and \
        ha["step_loss"] == hb["step_loss"] and ha["eval"] == hb["eval"]


def test_a_second_run_changing_only_training_settings_skips_the_frozen_pass(data_dir, weights_dir, tmp_path,
                                                                            capsys, monkeypatch):
    first = train(data_dir, weights_dir, tmp_path / "a", capsys)
    assert said(first, "frozen pass:") and len(entries()) == 1
    second = train(data_dir, weights_dir, tmp_path / "b", capsys, "--lr", "3e-4", "--seed", "7")
    assert not said(second, "frozen pass:")
    assert said(second, "feature cache: reusing ") and "the frozen pass is skipped" in said(second, "feature cache:")[0]
    assert len(entries()) == 1
    # the reused features give exactly the run that computes them afresh (in another, empty cache of
    # size 0, which keeps nothing)
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE_GB", "0")
    fresh = train(data_dir, weights_dir, tmp_path / "c", capsys, "--lr", "3e-4", "--seed", "7")
    assert said(fresh, "frozen pass:") and "not kept" in said(fresh, "frozen pass:")[0]
    assert same_run(tmp_path / "b", tmp_path / "c")
    assert not same_run(tmp_path / "a", tmp_path / "b")  # the rate did change the run


def changed_data(data_dir, tmp_path):
    out = tmp_path / "changed-data"
    out.mkdir()
    for f in data_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    with open(out / "train.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][0] = rows[1][0] + " (edited)"
    with open(out / "train.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    return out


def changed_weights(weights_dir, tmp_path):
    out = tmp_path / "changed-weights"
    out.mkdir()
    for f in weights_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    tensors = load_file(out / "model.safetensors")
    name = next(k for k in tensors if k.endswith("h.0.attn.c_attn.weight"))
    tensors[name][0, 0] += 0.5
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("change", ["data file", "max_length", "truncation", "weights file", "trainable"])
def test_what_changes_the_features_makes_a_new_entry(change, data_dir, weights_dir, tmp_path, capsys):
    train(data_dir, weights_dir, tmp_path / "a", capsys, "--max-length", "40")
    data, weights, extra = data_dir, weights_dir, ["--max-length", "40"]
    if change == "data file":
        data = changed_data(data_dir, tmp_path)
    elif change == "max_length":
        extra = ["--max-length", "39"]
    elif change == "truncation":
        extra += ["--truncation", "tail"]
    elif change == "weights file":
        weights = changed_weights(weights_dir, tmp_path)
    else:
        extra += ["--trainable", "head"]
    lines = train(data, weights, tmp_path / "b", capsys, *extra)
    assert said(lines, "frozen pass:") and not said(lines, "feature cache: reusing")
    assert len(entries()) == 2


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "meta.json missing"])
def test_a_damaged_entry_is_rebuilt_not_used(damage, data_dir, weights_dir, tmp_path, capsys):
    train(data_dir, weights_dir, tmp_path / "a", capsys)
    (entry,) = entries()
    features = entry.path / "train.bin"
    if damage == "truncated":
        os.truncate(features, features.stat().st_size // 2)
    elif damage == "one byte changed":
        with open(features, "r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        (entry.path / "meta.json").unlink()
    lines = train(data_dir, weights_dir, tmp_path / "b", capsys)
    assert said(lines, "frozen pass:") and not said(lines, "feature cache: reusing")
    if damage != "meta.json missing":  # without meta.json the folder was never a finished entry
        assert "was damaged" in said(lines, "feature cache: entry")[0]
    assert same_run(tmp_path / "a", tmp_path / "b")
    (rebuilt,) = entries()
    assert rebuilt.key == entry.key and rebuilt.meta["files"] == entry.meta["files"]


def test_an_abandoned_build_is_removed(data_dir, weights_dir, tmp_path, capsys):
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dead = root / ".building-0123456789abcdef-999999999-1"  # no process has that id
    dead.mkdir()
    (dead / "train.bin").write_bytes(b"\0" * 100)
    train(data_dir, weights_dir, tmp_path / "a", capsys)
    assert not dead.exists() and len(entries()) == 1


def test_the_cache_keeps_to_its_limit_least_recently_used_first(data_dir, weights_dir, tmp_path, capsys,
                                                                 monkeypatch):
    train(data_dir, weights_dir, tmp_path / "a", capsys, "--max-length", "30")
    (first,) = entries()
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE_GB", str(first.nbytes * 2.5 / 1e9))
    train(data_dir, weights_dir, tmp_path / "b", capsys, "--max-length", "29")
    train(data_dir, weights_dir, tmp_path / "c", capsys, "--max-length", "30")  # uses the first entry again
    assert len(entries()) == 2
    lines = train(data_dir, weights_dir, tmp_path / "d", capsys, "--max-length", "28")
    kept = {e.meta["max_length"] for e in entries()}
    assert kept == {30, 28}  # 29 was the least recently used
    assert said(lines, "feature cache: removed entry")


def test_cache_list_and_clear(data_dir, weights_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPTCLASSIFY_CONVERTED_CACHE", str(tmp_path / "converted"))  # none: GPT-2's are not GGUF
    train(data_dir, weights_dir, tmp_path / "a", capsys, "--max-length", "30")
    train(data_dir, weights_dir, tmp_path / "b", capsys, "--max-length", "29")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{cache_root()}: 2 entries")
    assert out[-1].startswith(f"{tmp_path / 'converted'}: 0 converted GGUF files, 0.00 GB")
    rows = out[2:-1]
    assert len(rows) == 2 and all(str(data_dir.resolve()) in r and " head+tail " in r for r in rows)
    key = rows[0].split()[0]
    assert main(["cache", "clear", key]) == 0
    assert capsys.readouterr().out.startswith("removed 1 entry")
    assert len(entries()) == 1 and not entries()[0].key.startswith(key)
    assert main(["cache", "clear", "ffffffffffff"]) == 1
    assert "no feature cache entry starts with ffffffffffff" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 0 and entries() == []


def test_a_cache_that_cannot_be_written_leaves_the_run_in_memory(data_dir, weights_dir, tmp_path, capsys,
                                                                 monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE", str(blocker / "features"))
    lines = train(data_dir, weights_dir, tmp_path / "a", capsys)
    assert "not kept on disk" in said(lines, "frozen pass:")[0]
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE", str(tmp_path / "cache"))
    train(data_dir, weights_dir, tmp_path / "b", capsys)
    assert same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_pass_keeps_other_depths_exactly_as_their_own_passes_would(dtype, data_dir, tmp_path, monkeypatch, capsys):
    """`tune`'s one frozen pass: the states entering the last 2 blocks, kept on the way to the last
    block's, are the entry (key and bytes) a last-2-blocks run's own pass makes; that run then skips its pass."""
    from helpers import small_gpt2_dir

    from gptclassify.config import TrainConfig
    from gptclassify.training.prepare import prepare

    weights, made = small_gpt2_dir(tmp_path, n_layer=4), {}
    for name in ("together", "alone"):
        monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE", str(tmp_path / f"cache-{name}"))
        if name == "together":
            prepare(None, str(weights), data_dir, TrainConfig(trainable="last-block", prefix_dtype=dtype),
                    tmp_path / "prepared", also_keep=("last-2-blocks", "last-9-blocks"))
            lines = capsys.readouterr().out.splitlines()
            assert "also the states entering block 2 " in said(lines, "frozen pass:")[0]
            assert len(entries()) == 2  # last-9-blocks: the model has 4 (left out, not an error)
        lines = train(data_dir, weights, tmp_path / name, capsys, "--prefix-dtype", dtype, "--trainable", "last-2-blocks")
        assert bool(said(lines, "frozen pass:")) == (name == "alone")
        made[name] = {e.meta["first_trainable_block"]: (e.key, {f.name: f.read_bytes() for f in e.path.glob("*.bin")})
                      for e in entries()}
    assert made["together"][2] == made["alone"][2]
    assert same_run(tmp_path / "together", tmp_path / "alone")
