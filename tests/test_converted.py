"""The converted-weights cache: a GGUF read once, then its float32 weights and tokenizer read from
the cache, equal to the GGUF's own bit for bit; a damaged entry is rebuilt, never used."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from gptclassify.weights.fetch import fetch_smollm2_gguf
from gptclassify.weights.gguf import tokenizer_from_gguf
from gptclassify.weights import load_pretrained
from gptclassify.weights import converted
from gptclassify.weights.gguf import dequantized_gguf


@pytest.fixture(scope="module")
def gguf():
    return fetch_smollm2_gguf(log=lambda *a: None)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCLASSIFY_CONVERTED_CACHE", str(tmp_path / "converted"))
    return tmp_path / "converted"


def assert_same_state(model, state):
    ours = model.state_dict()
    assert set(ours) == set(state)
    for name, value in state.items():
        assert torch.equal(ours[name], value), name


def test_second_load_reads_the_cache_and_equals_the_gguf(gguf, root, sms):
    raw_tokenizer = tokenizer_from_gguf(gguf)  # no entry yet: built from the GGUF's metadata
    assert not root.exists()
    _, raw_state = dequantized_gguf(gguf)

    first = load_pretrained(gguf)  # converts and keeps the entry
    entry = converted.entry_dir(gguf)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "model.safetensors", "tokenizer.json"]
    assert_same_state(first, raw_state)

    second = load_pretrained(gguf)
    assert_same_state(second, raw_state)
    assert second.out_head.weight.data_ptr() == second.tok_emb.weight.data_ptr()  # still tied
    cached_tokenizer = tokenizer_from_gguf(gguf)
    assert cached_tokenizer.hf is not raw_tokenizer.hf and cached_tokenizer.pad_id == raw_tokenizer.pad_id
    assert cached_tokenizer.source == str(gguf)
    texts = sms[:2000] + ["<|im_start|>user 0800 555 1234<|im_end|>", "naïve café 😀 \r\n\t"]
    assert [cached_tokenizer.encode(t) for t in texts] == [raw_tokenizer.encode(t) for t in texts]


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-meta"])
def test_a_damaged_entry_is_rebuilt_not_used(gguf, root, damage):
    _, raw_state = dequantized_gguf(gguf)
    load_pretrained(gguf)
    entry = converted.entry_dir(gguf)
    weights = entry / "model.safetensors"
    if damage == "flip":
        with open(weights, "r+b") as f:
            f.seek(weights.stat().st_size - 100)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x40]))
    elif damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 2)
    else:
        (entry / "entry.json").unlink()
    assert converted.read_entry(gguf) is None
    assert not entry.exists()  # removed, so the next load writes it anew
    assert_same_state(load_pretrained(gguf), raw_state)
    assert converted.read_entry(gguf) is not None


def test_cache_list_shows_the_converted_entry(gguf, root, capsys):
    from gptclassify.cli import main

    load_pretrained(gguf)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith(f"{root}: 1 converted GGUF file, 0.54 GB")
    assert out[-1].split() == [converted.entry_dir(gguf).name, "0.54", "GB"]


def test_a_changed_gguf_gets_its_own_entry(gguf, root, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gguf, copy)
    load_pretrained(copy)
    before = converted.entry_dir(copy)
    os.utime(copy, ns=(0, 10**18))  # another modification time: the file may have been replaced
    assert converted.entry_dir(copy) != before
    assert converted.read_entry(copy) is None


def test_an_unwritable_cache_still_loads(gguf, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GPTCLASSIFY_CONVERTED_CACHE", str(blocker / "converted"))
    _, raw_state = dequantized_gguf(gguf)
    assert_same_state(load_pretrained(gguf), raw_state)
    assert converted.read_entry(gguf) is None


def test_cache_clear_converted_frees_the_entries_and_the_next_load_converts_again(gguf, root, capsys):
    from gptclassify.cli import main

    _, raw_state = dequantized_gguf(gguf)
    load_pretrained(gguf)
    (root / ".building-abandoned").mkdir()  # a conversion killed half-way
    assert main(["cache", "clear"]) == 0  # the feature cache only: the converted entry stays
    assert converted.read_entry(gguf) is not None
    assert main(["cache", "clear", "--converted", "abc"]) == 1  # KEYs name feature cache entries
    assert "give it no KEY" in capsys.readouterr().err
    assert main(["cache", "clear", "--converted"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 converted GGUF file (0.54 GB;")
    assert converted.entries() == [] and list(root.iterdir()) == []
    assert_same_state(load_pretrained(gguf), raw_state)  # converted anew
    assert converted.read_entry(gguf) is not None
