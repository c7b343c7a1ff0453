"""SmolLM2 (Llama architecture) from scratch: equal to transformers from safetensors and from the
real GGUF, tokenizer included, and usable through the whole train/predict path."""

from __future__ import annotations

import json

import pytest
import torch

from gptclassify import LlamaModel, load_pretrained
from gptclassify.classifier.head import add_classifier_head, classify_logits, pool
from gptclassify.cli import main
from gptclassify.weights.fetch import fetch_smollm2_gguf
from gptclassify.models.generate import generate
from gptclassify.models.gpt2 import GPTModel, gpt2_config
from gptclassify.models.llama import llama_config
from gptclassify.inference.predict import Classifier
from gptclassify.weights.gguf import tokenizer_from_gguf
from gptclassify.config import FAMILY_DEFAULTS

transformers = pytest.importorskip("transformers")


def small_smollm2_dir(tmp_path, n_layers=2):
    """SmolLM2-135M's shape (width, heads, GQA, RoPE base, vocab) with fewer layers, random weights."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=n_layers, num_attention_heads=9, num_key_value_heads=3,
                                   rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
                                   tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "smol")
    return tmp_path / "smol", model


def test_logits_and_generation_match_transformers(tmp_path):
    path, hf = small_smollm2_dir(tmp_path)
    ours = load_pretrained(path)
    assert isinstance(ours, LlamaModel) and ours.cfg.n_kv_heads == 3 and ours.cfg.rope_base == 100000.0
    torch.manual_seed(1)
    x = torch.randint(0, 49152, (3, 40))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4
    out = hf.generate(x[:2, :8], attention_mask=torch.ones(2, 8, dtype=torch.long), max_new_tokens=10, do_sample=False)
    assert torch.equal(generate(ours, x[:2, :8], 10), out)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_block_at_pooled_positions_equals_full_forward(family):
    torch.manual_seed(0)
    model = GPTModel(gpt2_config("gpt2", n_layers=2, emb_dim=64, n_heads=4)) if family == "gpt2" \
        else LlamaModel(llama_config("smollm2-135m", n_layers=2))
    add_classifier_head(model.eval(), 3)
    ids, lengths = torch.randint(0, 1000, (4, 17)), torch.tensor([17, 5, 1, 9])
    with torch.no_grad():
        full = model.final_norm(model.trf_blocks(model.embed(ids)))
        for pooling in ("last-token", "last-position", "mean"):
            expected = model.out_head(pool(full, lengths, pooling))
            assert (classify_logits(model, ids, lengths, pooling) - expected).abs().max().item() < 1e-5

    # Training goes through the same shortcut: the last block's gradients must match too. (GPT-2's
    # key bias adds the same score to every position of the one query, so it gets no gradient.)
    last = list(model.trf_blocks[-1].parameters())
    for pooling in ("last-token", "last-position"):
        full = model.out_head(pool(model.final_norm(model.trf_blocks(model.embed(ids))), lengths, pooling))
        expected = torch.autograd.grad(full.square().sum(), last)
        got = torch.autograd.grad(classify_logits(model, ids, lengths, pooling).square().sum(), last, allow_unused=True)
        for g, e in zip(got, expected):
            g = torch.zeros_like(e) if g is None else g
            assert (g - e).abs().max().item() < 1e-5 * max(1.0, e.abs().max().item())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_pooled_shortcut_runs_under_bf16_autocast(family):
    """On CUDA the trained suffix runs under bf16 autocast; the one-query shortcut must too (the
    Llama's packed key/value projections once mixed float32 and bf16 there). CPU autocast, same casts."""
    torch.manual_seed(0)
    model = GPTModel(gpt2_config("gpt2", n_layers=2, emb_dim=64, n_heads=4)) if family == "gpt2" \
        else LlamaModel(llama_config("smollm2-135m", n_layers=2))
    add_classifier_head(model.eval(), 3)
    ids, lengths = torch.randint(0, 1000, (4, 17)), torch.tensor([17, 5, 1, 9])
    exact = classify_logits(model, ids, lengths, "last-token")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = classify_logits(model, ids, lengths, "last-token")
    rounded.float().sum().backward()  # and trains
    assert (rounded.float() - exact).abs().max().item() < 0.05 * max(1.0, exact.abs().max().item())


# ---------------------------------------------------------------- the real GGUF


@pytest.fixture(scope="module")
def gguf():
    return fetch_smollm2_gguf(log=lambda *a: None)


@pytest.fixture(scope="module")
def reference(gguf):
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model.eval(), tokenizer


def test_real_gguf_logits_match_transformers(gguf, reference, sms):
    ours = load_pretrained(gguf)
    assert ours.cfg.n_layers == 30 and ours.cfg.emb_dim == 576 and ours.cfg.tie_embeddings
    tok = tokenizer_from_gguf(gguf)
    ids = [tok.encode(t)[:48] for t in sms[:8]]
    width = max(map(len, ids))
    x = torch.tensor([i + [tok.pad_id] * (width - len(i)) for i in ids])
    with torch.no_grad():
        expected = reference[0](x).logits
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-3
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_real_gguf_tokenizer_matches_on_all_messages(gguf, reference, sms):
    """Our ids equal transformers' GGUF tokenizer's, except where transformers leaves out the
    digit split of llama.cpp's `smollm` pre-tokenizer (and SmolLM2's own tokenizer.json); with
    that split added, they are equal on all 5,574 messages."""
    from tokenizers import pre_tokenizers

    ours = tokenizer_from_gguf(gguf)
    ref = reference[1]
    assert ours.pad_id == 2 and ours.vocab_size == 49152
    differing = [t for t in sms if ours.encode(t) != ref(t, add_special_tokens=False).input_ids]
    assert len(differing) <= 5
    ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert len(sms) == 5574
    for text in sms:
        ids = ours.encode(text)
        assert ids == ref(text, add_special_tokens=False).input_ids
        assert ours.decode(ids) == text


def test_train_and_predict_with_real_smollm2(gguf, tmp_path, capsys):
    from helpers import sms_slice_dir

    data = sms_slice_dir(tmp_path, n_ham=40, n_spam=30)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "smollm2-135m", "--weights", str(gguf), "--out", str(run),
                 "--epochs", "1", "--max-steps", "3"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["family"] == "llama" and config["pad_id"] == 2
    assert config["training"]["lr"] == FAMILY_DEFAULTS["llama"]["lr"]  # the family's rate, recorded
    assert config["tokenizer"] == {"kind": "tokenizers", "file": "tokenizer.json"}
    assert (run / "tokenizer.json").is_file()
    capsys.readouterr()
    clf = Classifier.load(run, device="cpu")
    assert clf.tokenizer.encode("Call 0800 now") == tokenizer_from_gguf(gguf).encode("Call 0800 now")
    assert main(["predict", str(run), "Free entry in 2 a wkly comp"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("ham", "spam")


def test_hub_name_downloads_weights_config_and_tokenizer(tmp_path, gguf):
    """`smollm2-135m` through huggingface_hub, against a stand-in hub on 127.0.0.1."""
    from safetensors.torch import save

    from gptclassify.weights import load_tokenizer
    from hub_server import FakeHub

    path, hf = small_smollm2_dir(tmp_path)
    tokenizer_json = tmp_path / "tokenizer.json"
    tokenizer_from_gguf(gguf).hf.save(str(tokenizer_json))
    repo = "HuggingFaceTB/SmolLM2-135M"
    hub = FakeHub({(repo, "model.safetensors"): save({k: v.contiguous() for k, v in hf.state_dict().items()
                                                      if k != "lm_head.weight"}),
                   (repo, "config.json"): (path / "config.json").read_bytes(),
                   (repo, "tokenizer.json"): tokenizer_json.read_bytes()})
    try:
        model = load_pretrained("smollm2-135m", cache_dir=tmp_path / "hub", endpoint=hub.url)
        x = torch.randint(0, 49152, (2, 12))
        with torch.no_grad():
            assert (model(x) - hf(x).logits).abs().max().item() < 1e-4
        tok = load_tokenizer("smollm2-135m", cache_dir=tmp_path / "hub", endpoint=hub.url)
        assert tok.encode("Call 0800 now") == tokenizer_from_gguf(gguf).encode("Call 0800 now") and tok.pad_id == 0
    finally:
        hub.close()
