"""Every Llama-style family we build from scratch, against transformers: a tiny random model of
each saved with `save_pretrained` (safetensors; once sharded, once in bfloat16) loads through
`load_pretrained(DIR)` and gives transformers' logits within 1e-4 in float32, padded batches
included; the one-query last block equals the full pass; a 2-step `train` and a `predict` run."""

from __future__ import annotations

import json

import pytest
import torch

from gptclassify import LlamaModel, load_pretrained
from gptclassify.classifier.head import add_classifier_head, classify_logits, pool
from gptclassify.cli import main
from gptclassify.errors import UserError
from gptclassify.weights.llama_config import HF_DEFAULTS, config_from_hf

transformers = pytest.importorskip("transformers")

VOCAB = 50257  # GPT-2's, so helpers.gpt2_tokenizer_json can stand in for each model's tokenizer.json
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256)
# family -> (config class, model class, settings beyond COMMON that exercise its switches)
FAMILIES = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64), tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
                                                         attn_logit_softcapping=0.2, final_logit_softcapping=5.0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=16, query_pre_attn_scalar=16, sliding_window=5,
        layer_types=["sliding_attention", "full_attention"] * 2,
        rope_parameters={"full_attention": dict(rope_type="linear", rope_theta=1_000_000.0, factor=4.0),
                         "sliding_attention": dict(rope_type="default", rope_theta=10000.0)})),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(partial_rotary_factor=0.5, pad_token_id=0)),
}


def save_tiny(tmp_path, family: str, **save_kwargs):
    """A random model of `family` made by transformers, its norms perturbed so that every weight
    matters, saved with save_pretrained; returns (directory, the model in float32)."""
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls)(**COMMON, **extra)
    cfg._attn_implementation = "eager"
    hf = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if "norm" in name else 0.02))
    out = tmp_path / family
    dtype = save_kwargs.pop("dtype", None)
    (hf.to(dtype) if dtype else hf).save_pretrained(out, **save_kwargs)
    return out, hf.float()


def padded(lengths, width, seed=1):
    torch.manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width))
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_equal_transformers_padded_batches_included(tmp_path, family):
    save_kwargs = {"llama3": dict(max_shard_size="1MB"), "qwen2": dict(dtype=torch.bfloat16)}.get(family, {})
    path, hf = save_tiny(tmp_path, family, **save_kwargs)
    if family == "llama3":
        assert (path / "model.safetensors.index.json").is_file()
    ours = load_pretrained(path)
    assert isinstance(ours, LlamaModel) and ours.cfg.model_type == {"llama3": "llama"}.get(family, family)
    if family == "qwen2":  # bfloat16 on disk: both sides read the same rounded values
        hf = type(hf).from_pretrained(path, dtype=torch.float32).eval()
    ids, mask = padded([12, 7, 12, 1], 12)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask.long()).logits
        got = ours(ids)
    assert (got - expected)[mask].abs().max().item() < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_query_last_block_equals_the_full_pass(tmp_path, family):
    path, _ = save_tiny(tmp_path, family)
    model = add_classifier_head(load_pretrained(path), 3)
    ids, lengths = padded([12, 5, 1, 9], 12)[0], torch.tensor([12, 5, 1, 9])
    with torch.no_grad():
        full = model.out_head(pool(model.final_norm(model.trf_blocks(model.embed(ids))), lengths, "last-token"))
        assert (classify_logits(model, ids, lengths, "last-token") - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("family,recipe", [("qwen2", []), ("gemma3", []), ("phi3", ["--trainable", "lora"]),
                                           ("gemma2", ["--trainable", "last-2-blocks"])])
def test_two_training_steps_and_a_prediction(tmp_path, family, recipe, capsys):
    from tokenizers import Tokenizer, processors

    from helpers import gpt2_tokenizer_json, sms_slice_dir

    path, _ = save_tiny(tmp_path, family)
    gpt2_tokenizer_json(path / "tokenizer.json")
    if family == "gemma3":  # a model that wants its BOS in front of every text gets it
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                           special_tokens=[("<|endoftext|>", 50256)])
        tok.save(str(path / "tokenizer.json"))
    data, run = sms_slice_dir(tmp_path, n_ham=20, n_spam=12), tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", str(path), "--out", str(run),
                 "--epochs", "1", "--max-steps", "2", "--batch-size", "4", *recipe]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model_type"] == family
    capsys.readouterr()
    assert main(["predict", str(run), "Free entry in 2 a wkly comp"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("ham", "spam")
    from gptclassify.inference.predict import Classifier

    clf = Classifier.load(run, device="cpu")
    assert (clf.tokenizer.encode("hi")[0] == 50256) == (family == "gemma3")


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_our_family_defaults_are_transformers(family):
    """save_pretrained leaves out what equals its class's defaults: ours must be the same values."""
    cls = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
           "gemma2": "Gemma2Config", "gemma3": "Gemma3TextConfig", "phi3": "Phi3Config"}[family]
    theirs = getattr(transformers, cls)().to_dict()
    theirs.update(theirs.get("rope_parameters") or {}) if "full_attention" not in (theirs.get("rope_parameters") or {}) \
        else theirs.update(theirs["rope_parameters"]["full_attention"])
    for key, value in HF_DEFAULTS[family].items():
        if key in theirs and value is not None:  # None: derived (head_dim) or off
            assert theirs[key] == value, (family, key)


def test_an_architecture_we_lack_is_refused_in_one_line():
    with pytest.raises(UserError, match="architecture 'falcon' is not supported \\(ours: gpt2, llama, mistral"):
        config_from_hf({"model_type": "falcon"})
    with pytest.raises(UserError, match="rope scaling 'yarn' is not supported"):
        config_from_hf({**COMMON, "model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_any_hub_id_loads_a_sharded_checkpoint_and_its_tokenizer(tmp_path):
    """A hub id we have no short name for, in the Hugging Face layout, sharded: through
    huggingface_hub against a stand-in hub on 127.0.0.1."""
    from gptclassify import load_tokenizer
    from helpers import gpt2_tokenizer_json
    from hub_server import FakeHub

    path, hf = save_tiny(tmp_path, "qwen3", max_shard_size="1MB")
    gpt2_tokenizer_json(path / "tokenizer.json")
    repo = "someone/tiny-qwen3"
    files = {(repo, f.name): f.read_bytes() for f in path.iterdir()}
    assert (repo, "model.safetensors") not in files and len([f for f in files if f[1].endswith(".safetensors")]) > 1
    hub = FakeHub(files)
    try:
        where = dict(cache_dir=tmp_path / "hub", endpoint=hub.url)
        model, tok = load_pretrained(repo, **where), load_tokenizer(repo, **where)
        ids, mask = padded([9, 4], 9)
        with torch.no_grad():
            assert (model(ids) - hf(ids, attention_mask=mask.long()).logits)[mask].abs().max().item() < 1e-4
        assert tok.encode("Call now") == [14134, 783] and tok.pad_id == 50256
    finally:
        hub.close()


def test_random_weights_of_a_named_checkpoints_architecture(tmp_path):
    from gptclassify.weights import load_model_and_tokenizer
    from helpers import gpt2_tokenizer_json

    path, _ = save_tiny(tmp_path, "gemma2")
    gpt2_tokenizer_json(path / "tokenizer.json")
    model, tok, name = load_model_and_tokenizer(str(path), "random")
    trained = load_pretrained(path)
    assert model.cfg == trained.cfg and name == str(path) and tok.pad_id == 50256
    assert not torch.equal(model.trf_blocks[0].att.W_query.weight, trained.trf_blocks[0].att.W_query.weight)
    with pytest.raises(UserError, match="give --model or --weights, not both"):
        load_model_and_tokenizer(str(path), str(tmp_path / "elsewhere"))


def test_models_lists_every_family_and_short_name(capsys):
    from gptclassify.models.llama import MODEL_TYPES
    from gptclassify.weights.resolve import HUB_MODELS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {family} " in out for family in ("gpt2", *MODEL_TYPES))
    assert all(name in out for name in HUB_MODELS) and "gemma-3-270m-gguf" in out and "494M" in out


def test_llama_cpp_rope_factors_are_llama3_scaling(tmp_path):
    """llama.cpp keeps Llama 3.1's stretch as a tensor of per-frequency divisors (rope_freqs):
    given those, our model computes what the llama3 rope_scaling of config.json gives."""
    import dataclasses

    from gptclassify.models.llama import inverse_frequencies

    path, hf = save_tiny(tmp_path, "llama3")
    ours = load_pretrained(path)
    dims = ours.cfg.head_size
    factors = (inverse_frequencies(dims, ours.cfg.rope_base, None)
               / inverse_frequencies(dims, ours.cfg.rope_base, ours.cfg.rope_scaling)).tolist()
    assert max(factors) == pytest.approx(8.0) and min(factors) == pytest.approx(1.0)
    as_gguf = LlamaModel(dataclasses.replace(ours.cfg, rope_scaling=None, rope_factors=factors))
    as_gguf.load_state_dict(ours.state_dict())
    ids, mask = padded([12, 3], 12)
    with torch.no_grad():
        assert (as_gguf(ids) - hf(ids, attention_mask=mask.long()).logits)[mask].abs().max().item() < 1e-4


@pytest.mark.parametrize("weight_map,message", [
    ({"model.embed_tokens.weight": "../elsewhere.safetensors"}, "is not a file name beside the index"),
    ({"model.embed_tokens.weight": "/etc/x.safetensors"}, "is not a file name beside the index"),
    ([], "not a shard index"),
    ({"model.embed_tokens.weight": 3}, "not a shard index"),
])
def test_a_shard_index_may_only_name_files_beside_it(tmp_path, weight_map, message):
    path, _ = save_tiny(tmp_path, "llama3", max_shard_size="1MB")
    index = path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(UserError, match=message):
        load_pretrained(path)
