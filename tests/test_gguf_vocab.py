"""Tokenizers built from a GGUF file's vocabulary (data/gguf_vocab.py) against transformers' own
GGUF tokenizer builders on the same fields: SentencePiece BPE as Gemma's files carry it (no merges,
runs of spaces spelled as spaces, byte fallback) and byte-level BPE with llama.cpp's named splits."""

from __future__ import annotations

import json

import pytest

from gptclassify.data.gguf_vocab import build_tokenizer, merges_from_vocab

mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")

TEXTS = ["abc ab a", "  abcab  c", "cab bca xyz é", " a  b   c", "", "Call 0800 123456 now!!\n\nI'm  here",
         "naïve café 12345678 don't\tTAB", "日本語のテキスト 😀"]


def spm_fields():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    normal = ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "abc", "▁abc", "  ", "   ", "▁b", "ca", "▁c"]
    tokens = specials + normal + [f"<0x{i:02X}>" for i in range(256)]
    types = [3, 3, 3, 2] + [1] * len(normal) + [6] * 256
    return {"model": "llama", "tokens": tokens, "scores": [0.0] * len(tokens), "token_type": types,
            "bos_token_id": 2, "add_bos_token": True, "padding_token_id": 0}


def test_gemma_sentencepiece_vocabulary_tokenizes_as_transformers_does():
    fields = spm_fields()
    theirs_dict = {"tokens": fields["tokens"], "scores": fields["scores"], "token_type": fields["token_type"],
                   "tokenizer_type": "llama"}
    theirs = mapping.add_gguf_special_tokens(mapping.gemma_tokenizer(theirs_dict), theirs_dict).backend_tokenizer
    ours, pad = build_tokenizer(fields, gemma=True)
    assert pad == 0
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids, skip_special_tokens=False) == text
        assert ours.encode(text).ids == [2, *ids]  # the BOS the file asks for, in front


def test_merges_rank_by_the_vocabulary_order_then_the_longer_left_part():
    vocab = {"a": 0, "b": 1, "c": 2, "bc": 3, "ab": 4, "abc": 5}
    assert merges_from_vocab(vocab, {t: i for t, i in vocab.items()}) == [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "gpt2"])
def test_byte_level_vocabulary_splits_as_llama_cpp_names(pre):
    from conftest import GPT2_BPE_DIR

    vocab = json.loads((GPT2_BPE_DIR / "encoder.json").read_text(encoding="utf-8"))
    tokens = sorted(vocab, key=vocab.get)
    merges = [line for line in (GPT2_BPE_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if line]
    fields = {"model": "gpt2", "pre": pre, "tokens": tokens, "merges": merges, "token_type": [1] * 50256 + [3],
              "eos_token_id": 50256}
    ours, pad = build_tokenizer(fields)
    theirs_dict = {"tokens": tokens, "merges": merges, "token_type": fields["token_type"], "tokenizer_type": "gpt2",
                   "pre_tokenizer_type": pre}
    theirs = mapping.set_split_regex(mapping.add_gguf_special_tokens(mapping.byte_level_tokenizer(theirs_dict),
                                                                     theirs_dict), theirs_dict).backend_tokenizer
    assert pad == 50256
    for text in [*TEXTS, "text<|endoftext|>more"]:
        ids = ours.encode(text).ids
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids, skip_special_tokens=False) == text
