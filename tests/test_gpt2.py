"""GPT-2 from scratch equals Hugging Face's GPT-2, logit for logit, from every weight layout."""

from __future__ import annotations

import json

import pytest
import torch

import gptclassify
from gptclassify import UserError, load_pretrained
from gptclassify.models.generate import generate
from gptclassify.models.gpt2 import GPT2_CONFIGS

transformers = pytest.importorskip("transformers")

# Full 124M shape, and the other three sizes scaled down to two layers (same width and heads).
SHAPES = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium-2l": dict(n_layer=2, n_embd=1024, n_head=16),
    "gpt2-large-2l": dict(n_layer=2, n_embd=1280, n_head=20),
    "gpt2-xl-2l": dict(n_layer=2, n_embd=1600, n_head=25),
}


def random_hf_gpt2(seed=0, **shape):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, **shape)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # give the layer norms non-trivial weights too
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def sms_batch(tokenizer, sms, n=8, max_len=48):
    """Real messages, right-padded with <|endoftext|> to one length."""
    ids = [tokenizer.encode(t)[:max_len] for t in sms[:n]]
    longest = max(map(len, ids))
    return torch.tensor([x + [tokenizer.pad_id] * (longest - len(x)) for x in ids])


@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_and_generation_match_transformers(shape, tmp_path, tokenizer, sms):
    hf = random_hf_gpt2(**SHAPES[shape])
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert isinstance(ours, gptclassify.GPTModel)
    x = sms_batch(tokenizer, sms)
    with torch.no_grad():
        expected = hf(x).logits
        got = ours(x)
    assert got.shape == expected.shape == (x.shape[0], x.shape[1], 50257)
    assert (got - expected).abs().max().item() < 1e-4

    prompt = x[:2, :12]
    hf_out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                         pad_token_id=tokenizer.pad_id)
    assert torch.equal(generate(ours, prompt, 10), hf_out)


def test_book_module_names_and_named_configs():
    model = gptclassify.GPTModel(gptclassify.gpt2_config("gpt2", n_layers=2))
    block = model.trf_blocks[-1]
    for name in ("W_query", "W_key", "W_value", "out_proj"):
        assert isinstance(getattr(block.att, name), torch.nn.Linear)
    assert block.att.W_query.bias is not None  # qkv_bias
    for name in ("ff", "norm1", "norm2", "drop_resid"):
        assert hasattr(block, name)
    assert model.out_head.out_features == 50257 and model.final_norm is not None
    full = gptclassify.GPTModel(gptclassify.gpt2_config("gpt2"))
    # The book's 163,009,536 (chapter 4, qkv_bias off) plus 12 x 3 x 768 query/key/value biases.
    assert sum(p.numel() for p in full.parameters()) == 163_009_536 + 12 * 3 * 768
    assert set(GPT2_CONFIGS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}


def test_head_is_tied_and_prefix_optional(tmp_path, tokenizer, sms):
    from safetensors.torch import save_file

    hf = random_hf_gpt2(n_layer=2, n_embd=768, n_head=12)
    ours_a = load_pretrained(_save(hf, tmp_path / "a"))
    assert torch.equal(ours_a.out_head.weight, ours_a.tok_emb.weight)
    # The hub's own files have no `transformer.` prefix; without config.json the head count
    # comes from the named size of that width.
    bare = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "b").mkdir()
    save_file(bare, tmp_path / "b" / "model.safetensors")
    ours_b = load_pretrained(tmp_path / "b" / "model.safetensors")
    assert (ours_b.cfg.n_layers, ours_b.cfg.emb_dim, ours_b.cfg.n_heads) == (2, 768, 12)
    x = sms_batch(tokenizer, sms, n=2)
    with torch.no_grad():
        assert torch.equal(ours_a(x), ours_b(x))


def _save(hf, path):
    hf.save_pretrained(path)
    return path


def _bare_state(hf):
    return {k.removeprefix("transformer."): v.contiguous().clone() for k, v in hf.state_dict().items()
            if k != "lm_head.weight"}


@pytest.mark.parametrize("damage,message", [
    (lambda s: s.pop("h.1.mlp.c_fc.bias"), "'h.1.mlp.c_fc.bias' is missing"),
    (lambda s: s.__setitem__("h.0.extra.weight", torch.zeros(2)), "unexpected tensor 'h.0.extra.weight'"),
    (lambda s: s.__setitem__("h.0.ln_2.weight", torch.zeros(63)), "'trf_blocks.0.norm2.scale' has shape (63,)"),
])
def test_wrong_tensors_are_named(tmp_path, damage, message):
    from safetensors.torch import save_file

    state = _bare_state(random_hf_gpt2(n_layer=2, n_embd=64, n_head=4))
    damage(state)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 50257, "n_positions": 1024, "n_embd": 64,
                                                      "n_head": 4, "n_layer": 2}))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pretrained(tmp_path)


def test_not_a_model(tmp_path):
    with pytest.raises(UserError, match="unknown model 'gpt3'"):
        load_pretrained("gpt3")
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="holds no model.safetensors"):
        load_pretrained(tmp_path)


def openai_params(hf) -> dict:
    """The numpy dict the book's `load_gpt2_params_from_tf_ckpt` builds, from HF weights."""
    s = {k: v.numpy() for k, v in _bare_state(hf).items()}
    blocks = []
    for i in range(hf.config.n_layer):
        h = f"h.{i}."
        blocks.append({
            "attn": {"c_attn": {"w": s[h + "attn.c_attn.weight"], "b": s[h + "attn.c_attn.bias"]},
                     "c_proj": {"w": s[h + "attn.c_proj.weight"], "b": s[h + "attn.c_proj.bias"]}},
            "mlp": {"c_fc": {"w": s[h + "mlp.c_fc.weight"], "b": s[h + "mlp.c_fc.bias"]},
                    "c_proj": {"w": s[h + "mlp.c_proj.weight"], "b": s[h + "mlp.c_proj.bias"]}},
            "ln_1": {"g": s[h + "ln_1.weight"], "b": s[h + "ln_1.bias"]},
            "ln_2": {"g": s[h + "ln_2.weight"], "b": s[h + "ln_2.bias"]},
        })
    return {"wte": s["wte.weight"], "wpe": s["wpe.weight"], "blocks": blocks, "g": s["ln_f.weight"], "b": s["ln_f.bias"]}


def test_openai_numpy_dict_conversion(tokenizer, sms):
    from gptclassify.models.gpt2 import GPTConfig
    from gptclassify.weights import gpt2_from_openai_params

    hf = random_hf_gpt2(n_layer=2, n_embd=128, n_head=4)
    ours = gpt2_from_openai_params(openai_params(hf), GPTConfig(emb_dim=128, n_heads=4, n_layers=2))
    x = sms_batch(tokenizer, sms, n=4)
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4


def write_tf_checkpoint(hf, directory):
    """OpenAI's layout, written by TensorFlow: model/wte, model/h0/attn/c_attn/w (1, d, 3d), ..."""
    import numpy as np
    import tensorflow as tf

    params = openai_params(hf)
    variables = {"model/wte": params["wte"], "model/wpe": params["wpe"],
                 "model/ln_f/g": params["g"], "model/ln_f/b": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for path in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            a, b = path.split("/")
            variables[f"model/h{i}/{path}/w"] = block[a][b]["w"][np.newaxis]  # OpenAI keeps a leading 1
            variables[f"model/h{i}/{path}/b"] = block[a][b]["b"]
        for ln in ("ln_1", "ln_2"):
            variables[f"model/h{i}/{ln}/g"] = block[ln]["g"]
            variables[f"model/h{i}/{ln}/b"] = block[ln]["b"]
    graph = tf.Graph()
    with graph.as_default():
        tf_vars = [tf.compat.v1.Variable(v, name=k) for k, v in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(directory / "model.ckpt"))
    c = hf.config
    (directory / "hparams.json").write_text(json.dumps(
        {"n_vocab": c.vocab_size, "n_ctx": c.n_positions, "n_embd": c.n_embd, "n_head": c.n_head, "n_layer": c.n_layer}))


def test_tensorflow_checkpoint(tmp_path, tokenizer, sms):
    pytest.importorskip("tensorflow")
    hf = random_hf_gpt2(n_layer=2, n_embd=128, n_head=4)
    write_tf_checkpoint(hf, tmp_path)
    assert (tmp_path / "checkpoint").is_file() and (tmp_path / "model.ckpt.index").is_file()
    ours = load_pretrained(tmp_path)
    x = sms_batch(tokenizer, sms, n=4)
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4


def test_tensorflow_missing_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    (tmp_path / "hparams.json").write_text("{}")
    real_import = builtins.__import__

    def no_tf(name, *args, **kwargs):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no tensorflow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    with pytest.raises(UserError, match=r"pip install 'gptclassify\[tf\]'"):
        load_pretrained(tmp_path)
