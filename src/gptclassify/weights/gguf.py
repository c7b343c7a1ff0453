"""llama.cpp's GGUF files -> our `LlamaModel` and the tokenizer they carry.

The architecture comes from `general.architecture` (llama, qwen2, qwen3, gemma2, gemma3); every
quantization the `gguf` package knows (Q4_0 … Q8_0, the K-quants) is dequantized to float32. What
llama.cpp's converter changed is undone here: the Q/K rows it permutes for its `llama`
architecture only, and the +1 it folds into every Gemma norm weight.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..data.tokenizer import Tokenizer, tokenizer_from_json, wrap_hf_tokenizer
from ..models.llama import LlamaConfig, LlamaModel
from .llama import rename, tie_head
from .tensors import build_model

__all__ = ["config_from_gguf", "dequantized_gguf", "hf_tokenizer_from_gguf", "load_gguf", "tokenizer_from_gguf"]

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")

# llama.cpp's GGUF name (after `blk.{i}.`) -> ours
_GGUF_BLOCK = {
    "attn_norm.weight": "norm1.weight",
    "attn_q.weight": "att.W_query.weight",
    "attn_k.weight": "att.W_key.weight",
    "attn_v.weight": "att.W_value.weight",
    "attn_q.bias": "att.W_query.bias",
    "attn_k.bias": "att.W_key.bias",
    "attn_v.bias": "att.W_value.bias",
    "attn_q_norm.weight": "att.q_norm.weight",
    "attn_k_norm.weight": "att.k_norm.weight",
    "attn_output.weight": "att.out_proj.weight",
    "ffn_norm.weight": "norm2.weight",
    "ffn_gate.weight": "ff.gate.weight",
    "ffn_up.weight": "ff.up.weight",
    "ffn_down.weight": "ff.down.weight",
    "post_attention_norm.weight": "att_out_norm.weight",
    "post_ffw_norm.weight": "ff_out_norm.weight",
}
_GGUF_TOP = {"token_embd.weight": "tok_emb.weight", "output_norm.weight": "final_norm.weight",
             "output.weight": "out_head.weight"}


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
    if arch not in GGUF_ARCHITECTURES:
        raise UserError(f"GGUF architecture {arch!r} is not supported (ours: {', '.join(GGUF_ARCHITECTURES)})")
    g = lambda k, d=None: gguf_field(reader, f"{arch}.{k}", d)  # noqa: E731
    names = {t.name for t in reader.tensors}
    n_heads, emb_dim, n_layers = int(g("attention.head_count")), int(g("embedding_length")), int(g("block_count"))
    head_dim = int(g("attention.key_length", emb_dim // n_heads))
    gemma = arch.startswith("gemma")
    window = int(g("attention.sliding_window", 0) or 0) if gemma else 0
    if arch == "gemma2":
        types = ["sliding" if i % 2 == 0 else "full" for i in range(n_layers)]
    else:  # llama.cpp's Gemma 3: every sixth layer sees everything
        types = ["sliding" if (i + 1) % 6 else "full" for i in range(n_layers)]
    return LlamaConfig(
        vocab_size=int(g("vocab_size", len(gguf_field(reader, "tokenizer.ggml.tokens", [])))),
        context_length=int(g("context_length")), emb_dim=emb_dim, hidden_dim=int(g("feed_forward_length")),
        n_heads=n_heads, n_kv_heads=int(g("attention.head_count_kv", n_heads)), n_layers=n_layers,
        rope_base=float(g("rope.freq_base", 1_000_000.0 if arch == "gemma3" else 10000.0)),
        norm_eps=float(np.float32(g("attention.layer_norm_rms_epsilon", 1e-5))),
        tie_embeddings="output.weight" not in names, model_type=arch,
        head_dim=head_dim if head_dim * n_heads != emb_dim else 0,
        qkv_bias="blk.0.attn_q.bias" in names, qk_norm="blk.0.attn_q_norm.weight" in names,
        layer_types=types if window else None, sliding_window=window,
        rope_local_base=10000.0 if arch == "gemma3" else 0.0,
        norm_offset=1.0 if gemma else 0.0, embed_scale=gemma, activation="gelu_tanh" if gemma else "silu",
        sandwich_norms=gemma, attn_scale=head_dim ** -0.5 if gemma else 0.0,
        attn_softcap=float(g("attn_logit_softcapping", 0.0) or 0.0) if arch == "gemma2" else 0.0,
        final_softcap=float(g("final_logit_softcapping", 0.0) or 0.0) if arch == "gemma2" else 0.0,
    )


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of Q/K rows (it interleaves each head's two rotary halves)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantized_gguf(path: Path) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """The config and the float32 state dict (our names) of a GGUF file, read from the file itself."""
    from gguf.quants import dequantize

    reader = read_gguf(path)
    cfg = config_from_gguf(reader)
    tensors = {}
    for t in reader.tensors:
        try:  # a copy: unquantized tensors come back as views of the file's read-only memory map
            w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32, copy=True)
        except NotImplementedError:
            raise UserError(f"{path}: tensor {t.name} is quantized as {t.tensor_type.name}, which the gguf "
                            "package cannot dequantize") from None
        w = w.reshape([int(n) for n in reversed(t.shape)])  # GGUF lists dimensions innermost first
        if cfg.model_type == "llama" and t.name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, cfg.n_heads)
        elif cfg.model_type == "llama" and t.name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, cfg.n_kv_heads)
        elif cfg.norm_offset and t.name.endswith("norm.weight"):
            w -= cfg.norm_offset  # llama.cpp stores Gemma's (1 + weight)
        tensors[t.name] = torch.from_numpy(w)
    if "rope_freqs.weight" in tensors:  # Llama 3.1+: the rotary stretch as one divisor per frequency
        cfg.rope_factors = tensors.pop("rope_freqs.weight").tolist()
    return cfg, tie_head(rename(tensors, _GGUF_TOP, "blk.", _GGUF_BLOCK), cfg)


def load_gguf(path: Path) -> LlamaModel:
    """Our model from a llama.cpp GGUF file, its tensors dequantized to float32; converted once and
    then read from the converted-weights cache (`weights/converted.py`)."""
    from . import converted

    if (meta := converted.read_entry(path)) is not None:
        return build_model(LlamaModel, LlamaConfig(**meta["config"]), converted.read_state(path, meta))
    cfg, state = dequantized_gguf(path)
    tok, pad_id = hf_tokenizer_from_gguf(path)
    converted.write_entry(path, state, cfg.to_dict(), tok.to_str(), pad_id)
    return build_model(LlamaModel, cfg, state)


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    """The tokenizer a GGUF file carries (from the converted-weights cache once converted)."""
    from . import converted

    if (meta := converted.read_entry(Path(path))) is not None:  # converted once by the weights' loader
        tok = tokenizer_from_json(converted.tokenizer_json_path(Path(path)), meta["pad_id"])
        tok.source = str(path)
        return tok
    tok, pad_id = hf_tokenizer_from_gguf(Path(path))
    return wrap_hf_tokenizer(tok, pad_id, str(path))


def hf_tokenizer_from_gguf(path: Path):
    """A `tokenizers.Tokenizer` and its pad id, built from the vocabulary, merges and special tokens
    a GGUF file carries beside its weights (`data/gguf_vocab.py`)."""
    from ..data.gguf_vocab import build_tokenizer

    reader = read_gguf(Path(path))
    gemma = str(gguf_field(reader, "general.architecture", "")).startswith("gemma")
    fields = {k: gguf_field(reader, f"tokenizer.ggml.{k}") for k in
              ("model", "pre", "tokens", "merges", "token_type", "add_bos_token", "bos_token_id",
               "padding_token_id", "eos_token_id", "scores")}
    try:
        return build_tokenizer(fields, gemma)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
