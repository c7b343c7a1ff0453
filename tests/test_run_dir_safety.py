"""A run directory from someone else is data, not code: nothing in it is executed or unpickled,
nothing in its config.json points outside it, and a malformed or oversized file is refused with
one line, by the library and by every command that loads a run."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from gptclassify import Classifier, UserError
from gptclassify.cli import main
from test_predict import trained_run  # noqa: F401  (the session fixture)


@pytest.fixture
def copy(trained_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    return run


def edit_config(run, **changes):
    config = json.loads((run / "config.json").read_text())
    config.update(changes)
    (run / "config.json").write_text(json.dumps(config))


CONFIG_CASES = [
    (dict(tokenizer={"kind": "tokenizers", "file": "../../../etc/passwd"}), "'tokenizer' must be"),
    (dict(tokenizer={"kind": "tokenizers", "file": "/etc/passwd"}), "'tokenizer' must be"),
    (dict(tokenizer={"kind": "pickle", "file": "tokenizer.pkl"}), "'tokenizer' must be"),
    (dict(id2label=["ham", "spam"]), "'id2label' must map"),
    (dict(id2label={"0": "ham", "7": "spam"}), "'id2label' must map"),
    (dict(max_length=-3), "'max_length' must be a positive integer"),
    (dict(max_length="120"), "'max_length' must be a positive integer"),
    (dict(pooling="eval(open('x'))"), "'pooling' must be one of"),
    (dict(pad_id=None), "'pad_id' must be a token id"),
    (dict(model={"family": "gpt2", "emb_dim": 64, "__class__": "os.system"}), "'model' does not describe a model"),
    (dict(model="gpt2"), "'model' must be an object"),
    (dict(prefix_dtype="float64"), "'prefix_dtype' must be one of"),
    (dict(first_trainable_block="1; rm -rf /"), "'first_trainable_block' must be a block index"),
    (dict(training=["epochs", 5]), "'training' must be an object"),
    (dict(training={"epochs": 5, "run_this": "os.system"}), "unknown training setting 'run_this'"),
    (dict(training={"epochs": -5}), "--epochs must be 1 or more"),
]


@pytest.mark.parametrize("changes, message", CONFIG_CASES, ids=range(len(CONFIG_CASES)))
def test_malformed_configs_are_refused(copy, capsys, changes, message):
    edit_config(copy, **changes)
    with pytest.raises(UserError, match="config.json") as raised:
        Classifier.load(copy, "cpu")
    assert message in str(raised.value)
    assert main(["predict", str(copy), "hello"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_not_json_an_array_and_an_oversized_config_are_refused(copy):
    (copy / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(UserError, match="expected a JSON object"):
        Classifier.load(copy, "cpu")
    (copy / "config.json").write_bytes(b'{"model": "' + b"x" * (17 << 20) + b'"}')
    with pytest.raises(UserError, match="over the 16,777,216 a file of this kind may have"):
        Classifier.load(copy, "cpu")
    (copy / "config.json").write_text('{"model": ' * 100_000)
    with pytest.raises(UserError, match="config.json"):
        Classifier.load(copy, "cpu")


def test_a_safetensors_header_claiming_too_much_is_refused(copy):
    original = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + original[8:])  # a 1 TB header
    with pytest.raises(UserError, match="not a readable safetensors file"):
        Classifier.load(copy, "cpu")
    header = b'{"out_head.weight": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40000000000]}}'
    (copy / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)  # more than the file holds
    with pytest.raises(UserError, match="not a readable safetensors file"):
        Classifier.load(copy, "cpu")


def test_a_checkpoint_pointer_cannot_leave_the_run(copy, capsys):
    ckpt = copy / "checkpoint"
    (ckpt / "latest.json").write_text(json.dumps({"snapshot": "../../elsewhere"}))
    assert main(["train", "--resume", str(copy)]) == 1
    assert "names no complete snapshot" in capsys.readouterr().err


def test_nothing_in_a_run_directory_is_pickle():
    """The loaders read safetensors and JSON only: no torch.load, no pickle, anywhere in the package."""
    from pathlib import Path

    import gptclassify

    source = "\n".join(p.read_text() for p in Path(gptclassify.__file__).parent.rglob("*.py"))
    assert "torch.load(" not in source and "import pickle" not in source and "pickle.load" not in source
