"""The run's schema and the settings defined once (config.py, options.py), and the one resolver from
a name to weights and tokenizer (weights/resolve.py): each piece on its own, without a training run."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from gptclassify import UserError
from gptclassify.config import TOKENIZERS, Limits, Policy, RunConfig, TrainConfig, make_config
from gptclassify.options import add_options, check_settings, settings_of
from gptclassify.weights import load_model_and_tokenizer, load_tokenizer
from gptclassify.weights.resolve import architecture, resolve
from helpers import gpt2_tokenizer_json, small_gpt2_dir


def a_run_config(**training) -> RunConfig:
    policy = Policy("last-token", 120, "head+tail", None, 50256, "float32", 11)
    return RunConfig("gpt2", "gpt2", {"family": "gpt2", "emb_dim": 768}, ["ham", "spam"], policy, dict(TOKENIZERS[0]),
                     make_config(None, **training), {"dir": "data"}, 10, 20, True)


def test_a_run_config_reads_back_as_written():
    config = a_run_config(epochs=3, lr=1e-4, trainable="last-2-blocks")
    back = RunConfig.from_json(json.loads(json.dumps(config.to_json())), "config.json")
    assert back == config


def test_config_json_keeps_the_layout_transformers_users_know():
    written = a_run_config().to_json()
    assert written["id2label"] == {"0": "ham", "1": "spam"} and written["label2id"] == {"ham": 0, "spam": 1}
    assert written["num_classes"] == 2 and written["pooling"] == "last-token" and written["training"]["epochs"] == 5


def test_older_saved_settings_are_read_as_they_were_meant():
    """A run or checkpoint from before a setting existed (or under its old name) reads as it ran then."""
    old = TrainConfig.from_json({"epochs": 2, "cache_dtype": "bfloat16"}, "state.json")
    assert (old.prefix_dtype, old.lr_schedule, old.epochs) == ("bfloat16", "constant", 2)
    assert make_config(None, cache_dtype="bfloat16").prefix_dtype == "bfloat16"


@pytest.mark.parametrize("given, message", [
    (dict(epochs=0), "--epochs must be 1 or more"),
    (dict(lr=0.0), "--lr must be above 0"),
    (dict(lr=float("nan")), "--lr must be a finite number"),
    (dict(weight_decay=-1.0), "--weight-decay must be 0 or more"),
    (dict(pooling="max"), "--pooling must be one of last-token, last-position, mean"),
    (dict(lora_dropout=1.0), "--lora-dropout must be at most"),
    (dict(max_steps=2 ** 40), "--max-steps must be at most 2,147,483,647"),
    (dict(trainable="last-0-blocks"), "--trainable must be one of"),
    (dict(epochs="5"), "--epochs must be a number"),
])
def test_a_setting_outside_its_range_is_refused_in_one_line_naming_its_flag(given, message):
    with pytest.raises(UserError, match="^" + message.replace("+", r"\+").replace("(", r"\(")) as raised:
        make_config(None, **given)
    assert "\n" not in str(raised.value)


def test_every_setting_with_a_flag_is_an_option_and_not_given_means_none():
    parser = argparse.ArgumentParser()
    add_options(parser, TrainConfig)
    flags = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    cli = [f.name for f in settings_of(TrainConfig) if f.metadata["cli"]]
    assert sorted(flags) == sorted(cli) and "pad_to_max" not in flags
    assert all(v is None for v in vars(parser.parse_args([])).values())
    args = parser.parse_args(["--no-cache", "--epochs", "3", "--keep-best"])
    assert (args.cache, args.epochs, args.keep_best) == (False, 3, True)


def test_limits_are_checked_as_settings():
    with pytest.raises(UserError, match="^--max-queue must be 1 or more$"):
        Limits(max_queue_texts=0)
    with pytest.raises(UserError, match="^--timeout must be at most 86,400 seconds$"):
        Limits(timeout_s=1e9)
    check_settings(Limits())


def test_one_resolver_names_hub_ids_and_paths(tmp_path):
    assert resolve("openai-community/gpt2-medium").short_name == "gpt2-medium"
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").short_name == "smollm2-135m-instruct"
    assert (resolve("Qwen/Qwen2.5-0.5B").kind, resolve("Qwen/Qwen2.5-0.5B").repo) == ("hub", "Qwen/Qwen2.5-0.5B")
    assert resolve("someone/their-model").repo == "someone/their-model"  # any hub id, read when loaded
    assert architecture(resolve("gpt2")) == "gpt2"
    with pytest.raises(UserError, match="^unknown model 'gpt5': not a file or directory, not a hub id"):
        resolve("gpt5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no model.safetensors"):
        resolve(tmp_path / "empty")


def test_llama_weights_without_their_tokenizer_are_refused_not_given_gpt2s(tmp_path):
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    assert architecture(resolve(tmp_path / "llama")) == "llama"
    with pytest.raises(UserError, match="Llama-style weights need their tokenizer.json beside them"):
        load_tokenizer(tmp_path / "llama")
    gpt2_tokenizer_json(tmp_path / "llama" / "tokenizer.json")
    assert load_tokenizer(tmp_path / "llama").name != "gpt2" and load_tokenizer(tmp_path / "llama").pad_id == 50256


def test_model_must_describe_the_weights_it_is_given_with(tmp_path):
    weights = small_gpt2_dir(tmp_path)
    with pytest.raises(UserError, match=r"^--model gpt2 does not describe --weights .* \(a gpt2 model of 2 blocks of "
                                        r"width 64\); leave --model out"):
        load_model_and_tokenizer("gpt2", str(weights))
    model, tokenizer, name = load_model_and_tokenizer(None, str(weights))
    assert model.cfg.n_layers == 2 and tokenizer.name == "gpt2" and name == str(weights)
    model, _, name = load_model_and_tokenizer("gpt2", "random")
    assert name == "gpt2" and model.cfg.n_layers == 12
    assert isinstance(model.out_head, torch.nn.Linear)


def test_the_schema_field_list_is_what_the_docs_show():
    """Every TrainConfig field is a setting (has help); none is a bare field the docs cannot show."""
    assert all("help" in f.metadata for f in dataclasses.fields(TrainConfig))
