"""Shared fixtures: the real data beside the project, GPT-2's BPE files, small random models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPTCLASSIFY_SHARED_DATA", ROOT.parent / "shared" / "data"))
SMS_FILE = SHARED_DATA / "SMSSpamCollection"
GPT2_BPE_DIR = SHARED_DATA / "gpt2"

# tiktoken cannot download its files here: every test reads GPT-2's BPE files from shared/.
os.environ.setdefault("GPTCLASSIFY_GPT2_BPE_DIR", str(GPT2_BPE_DIR))


@pytest.fixture(scope="session", autouse=True)
def session_feature_cache(tmp_path_factory):
    """The on-disk feature cache of runs made by fixtures wider than a test, and the converted-weights
    cache of every test: never the user's."""
    os.environ["GPTCLASSIFY_FEATURE_CACHE"] = str(tmp_path_factory.mktemp("session-feature-cache"))
    os.environ["GPTCLASSIFY_CONVERTED_CACHE"] = str(tmp_path_factory.mktemp("converted-weights"))


@pytest.fixture(autouse=True)
def feature_cache_dir(session_feature_cache, tmp_path_factory, monkeypatch):
    """Each test's own on-disk feature cache (not the user's), shared by the runs within the test."""
    path = tmp_path_factory.mktemp("feature-cache")
    monkeypatch.setenv("GPTCLASSIFY_FEATURE_CACHE", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sms_texts() -> list[str]:
    """All 5,574 messages, read as the file is: one `label<TAB>text` per line."""
    with open(SMS_FILE, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


@pytest.fixture(scope="session")
def sms():
    return sms_texts()


@pytest.fixture(scope="session")
def tokenizer():
    from gptclassify import get_tokenizer

    return get_tokenizer("gpt2")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """`prepare csv` of 90 ham and 60 spam messages of the real file (read only by the tests)."""
    from helpers import sms_slice_dir

    return sms_slice_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """A 2-layer, 64-wide GPT-2 with random weights in Hugging Face's layout."""
    from helpers import small_gpt2_dir

    return small_gpt2_dir(tmp_path_factory.mktemp("weights"))


# `make test-fast`, the edit loop's tier, leaves these out: they start processes (torchrun, servers,
# runs killed on purpose), read real weights or full-size models, or fuzz every option. `make test`
# (the README's test command, what CI runs) runs everything.
SLOW_MODULES = {"test_lora", "test_distributed", "test_faults", "test_options_fuzz", "test_llama", "test_converted",
                "test_gpt2", "test_serve", "test_serve_faults", "test_hub", "test_predict_stream", "test_cuda",
                "test_hostile_input", "test_report", "test_tune"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
