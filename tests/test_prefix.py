"""The frozen prefix's precision (--prefix-dtype): what `auto` picks on which CPU, int8 and
bfloat16 prefixes close to float32, and a run that predicts, evaluates and serves with the
precision it was trained with while its saved weights stay float32."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gptclassify import Classifier
from gptclassify.classifier import prefix as prefix_mod
from gptclassify.errors import UserError
from gptclassify.inference.evaluate import evaluate_run
from gptclassify.models.gpt2 import GPTModel
from gptclassify.classifier.prefix import FrozenPrefix, resolve_prefix_dtype
from gptclassify.training.run import train_run
from gptclassify.config import make_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "bfloat16"),
    ({"avx2", "avx512f"}, "float32"),
    ({"avx2"}, "float32"),
])
def test_auto_reads_the_cpu(flags, expected, monkeypatch):
    monkeypatch.setattr(prefix_mod, "cpu_flags", lambda: frozenset(flags))
    assert resolve_prefix_dtype("auto", CPU) == expected
    assert resolve_prefix_dtype("float32", CPU) == "float32"  # an explicit choice is kept


def test_auto_on_cuda_and_int8_off_the_cpu():
    assert resolve_prefix_dtype("auto", torch.device("cuda")) == "bfloat16"
    with pytest.raises(UserError, match="int8 runs on CPUs only"):
        resolve_prefix_dtype("int8", torch.device("cuda"))
    with pytest.raises(UserError, match="--prefix-dtype must be one of"):
        resolve_prefix_dtype("fp8", CPU)


def test_this_machines_flags_are_read():
    flags = prefix_mod.cpu_flags()
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in flags  # what PyTorch detected, Linux reports too


@pytest.mark.skipif(not prefix_mod.cpu_int8_kernels(), reason="no fbgemm int8 kernels on this CPU")
def test_int8_and_bfloat16_prefixes_are_close_to_float32_and_leave_the_model_alone():
    from gptclassify.models.gpt2 import gpt2_config

    torch.manual_seed(0)
    model = GPTModel(gpt2_config("gpt2", n_layers=3, emb_dim=256, n_heads=4)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 50257, (4, 50))
    exact = FrozenPrefix(model, 2, "float32", CPU)(ids)
    for dtype, tolerance in [("int8", 0.05), ("bfloat16", 0.02)]:
        got = FrozenPrefix(model, 2, dtype, CPU)(ids).float()
        rel = ((got - exact).norm() / exact.norm()).item()
        assert 0 < rel < tolerance, (dtype, rel)
    assert all((before[k] == v).all() for k, v in model.state_dict().items())  # quantized copies only


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_a_run_predicts_and_evaluates_in_its_prefix_precision(dtype, data_dir, weights_dir, tmp_path):
    if dtype == "int8" and not prefix_mod.cpu_int8_kernels():
        pytest.skip("no fbgemm int8 kernels on this CPU")
    lines = []
    cfg = make_config(None, epochs=1, max_steps=4, prefix_dtype=dtype)
    train_run(None, str(weights_dir), data_dir, cfg, tmp_path / "run", log=lines.append)
    assert f"frozen prefix: {dtype}; the trainable part computes in float32" in lines
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["prefix_dtype"] == dtype
    clf = Classifier.load(tmp_path / "run", "cpu")
    assert clf.prefix.dtype == dtype
    # the cached, trained-on features and prediction from text agree: same test confusion matrix
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert evaluate_run(tmp_path / "run", data_dir, "test")["confusion_matrix"] == metrics["confusion_matrix"]
    # the saved frozen weights are the float32 originals
    saved = load_file(tmp_path / "run" / "model.safetensors")
    base = load_file(weights_dir / "model.safetensors")
    assert saved["trf_blocks.0.att.W_query.weight"].dtype == torch.float32
    assert torch.equal(saved["tok_emb.weight"], base["wte.weight"] if "wte.weight" in base else base["transformer.wte.weight"])


def test_the_old_option_name_still_works(data_dir, weights_dir, tmp_path):
    cfg = make_config(None, epochs=1, max_steps=2, cache_dtype="bfloat16")
    assert cfg.prefix_dtype == "bfloat16"
    assert make_config("book").prefix_dtype == "float32"  # the book computes in float32
