"""Our streaming safetensors writer (files.write_safetensors): what safetensors itself reads back,
tensor for tensor, every dtype we store, empty and 0-d tensors and metadata included."""

from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from gptclassify.files import SAFETENSORS_DTYPES, save_safetensors

DTYPES = [getattr(torch, name) for name in SAFETENSORS_DTYPES]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3)), min_size=1, max_size=6))
def test_safetensors_reads_back_what_we_write(tmp_path_factory, specs):
    tensors = {}
    for i, (dtype, shape) in enumerate(specs):
        t = torch.randn(shape) * 100
        tensors[f"t{i}"] = t.to(dtype) if dtype.is_floating_point else t.round().clamp(-100, 100).to(dtype)
    tensors["view"] = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt", "what": "a test"})
    back = load_file(str(path))
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "what": "a test"}
