"""The download route, against a stand-in hub on 127.0.0.1."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors.torch import save

from gptclassify import UserError, load_pretrained
from hub_server import FakeHub
from test_gpt2 import _bare_state, random_hf_gpt2


@pytest.fixture(scope="module")
def gpt2_bytes():
    """A two-layer GPT-2 of the 124M width, serialised the way the hub stores it."""
    hf = random_hf_gpt2(n_layer=2, n_embd=768, n_head=12)
    return save(_bare_state(hf)), hf


@pytest.fixture
def hub(gpt2_bytes):
    config = json.dumps(gpt2_bytes[1].config.to_dict()).encode()
    server = FakeHub({("openai-community/gpt2", "model.safetensors"): gpt2_bytes[0],
                      ("openai-community/gpt2", "config.json"): config})
    yield server
    server.close()


def test_download_then_cache(hub, gpt2_bytes, tmp_path):
    model = load_pretrained("gpt2", cache_dir=tmp_path, endpoint=hub.url)
    x = torch.tensor([[6109, 3626, 6100, 345]])
    with torch.no_grad():
        assert (model(x) - gpt2_bytes[1](x).logits).abs().max().item() < 1e-4
    assert hub.gets == 2  # model.safetensors and config.json
    load_pretrained("gpt2", cache_dir=tmp_path, endpoint=hub.url)
    assert hub.gets == 2  # second call served from the cache


def test_corrupted_download_is_caught_and_removed(hub, tmp_path):
    hub.mode = "corrupt"
    with pytest.raises(UserError, match="corrupt.*removed from the cache"):
        load_pretrained("gpt2", cache_dir=tmp_path, endpoint=hub.url)
    hub.mode = "ok"  # the next call downloads a good copy instead of trusting the bad one
    load_pretrained("gpt2", cache_dir=tmp_path, endpoint=hub.url)


def test_truncated_download_is_caught(hub, tmp_path):
    hub.mode = "truncate"
    with pytest.raises(UserError, match="could not download model.safetensors") as err:
        load_pretrained("gpt2", cache_dir=tmp_path, endpoint=hub.url)
    assert "\n" not in str(err.value)


def test_unreachable_host_says_what_failed_and_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)  # skip huggingface_hub's back-off waits
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError) as err:
        load_pretrained("gpt2-medium", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{port}")
    message = str(err.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}/openai-community/gpt2-medium" in message
    assert "pass a local path" in message
