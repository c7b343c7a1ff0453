"""Map Llama-family weights (Hugging Face safetensors, or llama.cpp's GGUF) onto our `LlamaModel`."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..data.tokenizer import Tokenizer, tokenizer_from_json, wrap_hf_tokenizer
from ..hub import hub_file
from ..models.llama import LLAMA_CONFIGS, LlamaConfig, LlamaModel
from .tensors import build_model, read_safetensors

__all__ = ["dequantized_gguf", "hf_tokenizer_from_gguf", "load_from_hub", "load_from_tensors", "tokenizer_from_gguf",
           "load_gguf"]

# Hugging Face name (after `model.layers.{i}.`) -> ours (after `trf_blocks.{i}.`)
_HF_BLOCK = {
    "input_layernorm.weight": "norm1.weight",
    "self_attn.q_proj.weight": "att.W_query.weight",
    "self_attn.k_proj.weight": "att.W_key.weight",
    "self_attn.v_proj.weight": "att.W_value.weight",
    "self_attn.o_proj.weight": "att.out_proj.weight",
    "post_attention_layernorm.weight": "norm2.weight",
    "mlp.gate_proj.weight": "ff.gate.weight",
    "mlp.up_proj.weight": "ff.up.weight",
    "mlp.down_proj.weight": "ff.down.weight",
}
# llama.cpp's GGUF name (after `blk.{i}.`) -> ours
_GGUF_BLOCK = {
    "attn_norm.weight": "norm1.weight",
    "attn_q.weight": "att.W_query.weight",
    "attn_k.weight": "att.W_key.weight",
    "attn_v.weight": "att.W_value.weight",
    "attn_output.weight": "att.out_proj.weight",
    "ffn_norm.weight": "norm2.weight",
    "ffn_gate.weight": "ff.gate.weight",
    "ffn_up.weight": "ff.up.weight",
    "ffn_down.weight": "ff.down.weight",
}
_GGUF_TOP = {"token_embd.weight": "tok_emb.weight", "output_norm.weight": "final_norm.weight",
             "output.weight": "out_head.weight"}
_HF_TOP = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "final_norm.weight",
           "lm_head.weight": "out_head.weight"}


def rename(tensors: dict, top: dict, block_prefix: str, block: dict) -> dict[str, torch.Tensor]:
    pattern = re.compile(rf"^{re.escape(block_prefix)}(\d+)\.(.+)$")
    out = {}
    for name, value in tensors.items():
        if name in top:
            out[top[name]] = value
        elif (m := pattern.match(name)) and m.group(2) in block:
            out[f"trf_blocks.{m.group(1)}.{block[m.group(2)]}"] = value
        elif name.endswith("rotary_emb.inv_freq"):
            continue  # older checkpoints store this derived buffer
        else:
            raise UserError(f"weights: unexpected tensor {name!r}")
    return out


def tie_head(state: dict, cfg: LlamaConfig) -> dict:
    if "out_head.weight" not in state:
        if not cfg.tie_embeddings:
            raise UserError("weights: tensor 'lm_head.weight' is missing")
        state["out_head.weight"] = state["tok_emb.weight"]
    return state


def config_from_hf(hf: dict) -> LlamaConfig:
    rope = hf.get("rope_parameters") or {}
    return LlamaConfig(
        vocab_size=hf["vocab_size"], context_length=hf.get("max_position_embeddings", 8192),
        emb_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        n_layers=hf["num_hidden_layers"], rope_base=float(hf.get("rope_theta", rope.get("rope_theta", 10000.0))),
        norm_eps=hf.get("rms_norm_eps", 1e-5), tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def infer_config(tensors: dict) -> LlamaConfig:
    vocab_size, emb_dim = tensors["model.embed_tokens.weight"].shape
    n_layers = len({k.split(".")[2] for k in tensors if k.startswith("model.layers.")})
    for c in LLAMA_CONFIGS.values():
        if c["emb_dim"] == emb_dim and c["n_layers"] == n_layers:
            return LlamaConfig(vocab_size=vocab_size, **c)
    raise UserError("weights: a Llama-family safetensors file needs its config.json beside it")


def load_from_tensors(tensors: dict, directory: Path) -> LlamaModel:
    cfg_path = directory / "config.json"
    cfg = config_from_hf(json.loads(cfg_path.read_text())) if cfg_path.is_file() else infer_config(tensors)
    state = tie_head(rename(tensors, _HF_TOP, "model.layers.", _HF_BLOCK), cfg)
    return build_model(LlamaModel, cfg, state)


def load_from_hub(repo: str, *, cache_dir=None, endpoint=None) -> LlamaModel:
    weights = hub_file(repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint)
    hub_file(repo, "config.json", cache_dir=cache_dir, endpoint=endpoint)
    return load_from_tensors(read_safetensors(weights), weights.parent)


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of Q/K rows (it interleaves each head's two rotary halves)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: Path):
    """The file's reader; the weights and the tokenizer of one file share it (parsing its
    metadata, a vocabulary of 49,152 strings for SmolLM2, takes seconds)."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    stat = Path(path).stat()
    return _read_gguf(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _read_gguf(path: str, size: int, mtime_ns: int):
    try:
        import gguf
    except ImportError:
        raise UserError("reading .gguf files needs the gguf package: pip install gguf") from None
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError on damaged files
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:100]})") from None


def gguf_field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader) -> LlamaConfig:
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise UserError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    g = lambda k, d=None: gguf_field(reader, f"llama.{k}", d)  # noqa: E731
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=int(g("vocab_size", len(gguf_field(reader, "tokenizer.ggml.tokens", [])))),
        context_length=int(g("context_length")), emb_dim=int(g("embedding_length")),
        hidden_dim=int(g("feed_forward_length")), n_heads=int(g("attention.head_count")),
        n_kv_heads=int(g("attention.head_count_kv", g("attention.head_count"))),
        n_layers=int(g("block_count")), rope_base=float(g("rope.freq_base", 10000.0)),
        norm_eps=float(np.float32(g("attention.layer_norm_rms_epsilon", 1e-5))),
        tie_embeddings="output.weight" not in names,
    )


def load_gguf(path: Path) -> LlamaModel:
    """Our Llama from a llama.cpp GGUF file, its tensors dequantized to float32; converted once and
    then read from the converted-weights cache (`weights/converted.py`)."""
    from . import converted

    if (meta := converted.read_entry(path)) is not None:
        return build_model(LlamaModel, LlamaConfig(**meta["config"]), converted.read_state(path, meta))
    cfg, state = dequantized_gguf(path)
    tok, pad_id = hf_tokenizer_from_gguf(path)
    converted.write_entry(path, state, cfg.to_dict(), tok.to_str(), pad_id)
    return build_model(LlamaModel, cfg, state)


def hf_tokenizer_from_gguf(path: Path):
    """A `tokenizers.Tokenizer` (byte-level BPE) and its pad id, built from the vocabulary, merges and
    special tokens a GGUF file carries beside its weights.

    llama.cpp's `smollm` pre-tokenizer splits every digit on its own before the GPT-2 split, as
    SmolLM2's own tokenizer.json does; other byte-level vocabularies get the plain GPT-2 split.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = read_gguf(Path(path))
    kind = gguf_field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"{path}: tokenizer type {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in gguf_field(reader, "tokenizer.ggml.merges")]
    types = gguf_field(reader, "tokenizer.ggml.token_type") or []
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if gguf_field(reader, "tokenizer.ggml.pre") == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    pad_id = gguf_field(reader, "tokenizer.ggml.padding_token_id", gguf_field(reader, "tokenizer.ggml.eos_token_id", 0))
    return tok, int(pad_id)


def dequantized_gguf(path: Path) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """The config and the float32 state dict (our names) of a GGUF file, read from the file itself."""
    from gguf.quants import dequantize

    reader = read_gguf(path)
    cfg = config_from_gguf(reader)
    tensors = {}
    for t in reader.tensors:
        # A copy: unquantized tensors come back as views of the file's read-only memory map.
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32, copy=True)
        w = w.reshape([int(n) for n in reversed(t.shape)])  # GGUF lists dimensions innermost first
        if t.name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, cfg.n_heads)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, cfg.n_kv_heads)
        tensors[t.name] = torch.from_numpy(w)
    return cfg, tie_head(rename(tensors, _GGUF_TOP, "blk.", _GGUF_BLOCK), cfg)


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    """The byte-level BPE tokenizer a GGUF file carries (from the converted-weights cache once converted)."""
    from . import converted

    if (meta := converted.read_entry(Path(path))) is not None:  # converted once by the weights' loader
        tok = tokenizer_from_json(converted.tokenizer_json_path(Path(path)), meta["pad_id"])
        tok.source = str(path)
        return tok
    tok, pad_id = hf_tokenizer_from_gguf(Path(path))
    return wrap_hf_tokenizer(tok, pad_id, str(path))
