"""A `tokenizers.Tokenizer` from the vocabulary a GGUF file carries (its `tokenizer.ggml.*` fields).

Two kinds of vocabulary: byte-level BPE (`gpt2`: SmolLM2, Qwen2, Llama 3), whose merges the file
lists and whose text split llama.cpp names (`tokenizer.ggml.pre`); and SentencePiece BPE (`llama`:
Gemma, Llama 2, Mistral), whose merges the file does not list and are rebuilt from the
vocabulary: every way to cut a token into two tokens, the token's rank deciding the merge's.
Gemma ranks its merges by the order of the vocabulary, the others by the tokens' scores.
"""

from __future__ import annotations

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp's pre-tokenizer name -> the split its merges were learned on
SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT,
          "deepseek-r1-qwen": _QWEN2_SPLIT}


def build_tokenizer(fields: dict, gemma: bool = False):
    """(tokenizer, pad id) from the `tokenizer.ggml.*` fields (keys without the prefix); a
    ValueError for a vocabulary kind we cannot build."""
    from tokenizers import AddedToken, processors

    if fields["model"] == "gpt2":
        tok = byte_level_bpe(fields)
    elif fields["model"] == "llama":
        tok = sentencepiece_bpe(fields, gemma)
    else:
        raise ValueError(f"tokenizer type {fields['model']!r} is not supported (byte-level BPE 'gpt2', "
                         "SentencePiece BPE 'llama')")
    tokens, types = fields["tokens"], fields.get("token_type") or []
    vocab = tok.get_vocab()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == CONTROL and t in vocab])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab])
    bos = fields.get("bos_token_id")
    if fields.get("add_bos_token") and bos is not None:  # the model expects its BOS in front of every text
        tok.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A",
                                                           special_tokens=[(tokens[bos], int(bos))])
    pad = fields.get("padding_token_id")
    return tok, int(pad if pad is not None else fields.get("eos_token_id") or 0)


def byte_level_bpe(fields: dict):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = fields["tokens"]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1)) for m in fields.get("merges") or []]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = fields.get("pre")
    if pre == "smollm":  # every digit on its own, then GPT-2's split (SmolLM2's own tokenizer.json)
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:  # the split llama.cpp names, GPT-2's for names we do not know
        split = pre_tokenizers.Split(Regex(SPLITS.get(pre, _GPT2_SPLIT)), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    if pre in ("qwen2", "deepseek-r1-qwen"):
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok


def sentencepiece_bpe(fields: dict, gemma: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = list(fields["tokens"])
    if gemma:  # Gemma's files spell its runs of spaces as spaces; its vocabulary as "▁"
        tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in tokens]
        rank = {t: i for i, t in enumerate(tokens)}
    else:
        rank = {t: -s for t, s in zip(tokens, fields.get("scores") or [])}
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = next((t for t, k in zip(tokens, fields.get("token_type") or []) if k == 2), None)  # 2: unknown
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges_from_vocab(vocab, rank), byte_fallback=True,
                               fuse_unk=True, unk_token=unk))
    if gemma:
        tok.normalizer = normalizers.Replace(" ", "\u2581")
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([] if gemma else [decoders.Strip(" ", 1, 0)]))
    return tok


def merges_from_vocab(vocab: dict[str, int], rank: dict[str, float]) -> list[tuple[str, str]]:
    """Every (left, right) whose concatenation is a token, the best-ranked token's first; among one
    token's cuts, the longer left part first."""
    merges = []
    for token in vocab:
        if token not in rank:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                merges.append((rank[token], -len(left), -len(right), vocab[left], vocab[right], left, right))
    merges.sort()
    return [(m[5], m[6]) for m in merges]
