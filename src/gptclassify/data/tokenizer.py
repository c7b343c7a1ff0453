"""Tokenizers behind one small interface: `encode`, `decode`, `pad_id`, `name`.

GPT-2 uses tiktoken's `gpt2` encoding. tiktoken downloads its two BPE files on first use; where
that host is unreachable, point `GPTCLASSIFY_GPT2_BPE_DIR` (or the `bpe_dir` argument) at a
directory holding OpenAI's `encoder.json` and `vocab.bpe`: they are checked against their sha256.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError

GPT2_BPE_ENV = "GPTCLASSIFY_GPT2_BPE_DIR"
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


@dataclass
class Tokenizer:
    name: str
    encode_fn: Callable[[str], list[int]]
    decode_fn: Callable[[list[int]], str]
    pad_id: int
    vocab_size: int
    source: str = ""  # where the vocabulary came from, for the run's config.json
    hf: object = None  # the `tokenizers.Tokenizer` behind a non-GPT-2 tokenizer, saved with a run
    encoding: object = None  # the `tiktoken.Encoding` behind GPT-2's (an export rebuilds its files from it)
    prefix: tuple = ()  # ids the model expects before every text (Gemma's and Llama 3's BOS); `keep` keeps them
    sep_id: int | None = None  # between the two texts of a pair: the model's end-of-text token (None: pad_id)

    def encode(self, text: str, max_length: int | None = None, truncation: str = "head") -> list[int]:
        """Token ids of any Python string (lone surrogates become U+FFFD). With `max_length`, a text
        far longer than it could fill (over 64 characters a token, 4,096 at least) is cut first,
        keeping the end(s) `truncation` will keep, so a 10 MB text costs what those tokens cost.
        The ids, the model's `prefix` first, are not yet cut to `max_length`: `keep` does that."""
        budget = max(4096, 64 * max_length) if max_length is not None else None
        if budget is None or len(text) <= 2 * budget:
            return [*self.prefix, *self.encode_fn(clean_text(text))]
        head = self.encode_fn(clean_text(text[:budget])) if truncation != "tail" else []
        tail = self.encode_fn(clean_text(text[-budget:])) if truncation != "head" else []
        return [*self.prefix, *head, *tail]

    def decode(self, ids) -> str:
        return self.decode_fn(list(ids))

    def encode_raw(self, text, max_length: int | None = None, truncation: str = "head"):
        """`encode(text)` for a text; for a pair (a, b), the ids of each, uncut (`fit` joins them)."""
        if not isinstance(text, tuple):
            return self.encode(text, max_length, truncation)
        budget = 2 * max(4096, 64 * max_length) if max_length is not None else None
        return tuple(self.encode_fn(clean_text(t[:budget] if budget else t)) for t in text)

    def raw_length(self, raw) -> int:
        return len(self.prefix) + len(raw[0]) + 1 + len(raw[1]) if isinstance(raw, tuple) else len(raw)

    def fit(self, raw, max_length: int, truncation: str = "head") -> list[int]:
        """At most `max_length` ids of an `encode_raw` result: a text cut by `truncation` (`keep`);
        a pair joined as prefix + a + separator + b, the longer of the two cut from its end first
        until it fits: the tokenizers library's `longest_first`, which transformers' tokenizers use
        (when both must be cut, the shorter keeps half the room, rounded down)."""
        if not isinstance(raw, tuple):
            return keep(raw, max_length, truncation, len(self.prefix))
        a, b = raw
        room, la, lb = max(max_length - len(self.prefix) - 1, 0), len(a), len(b)
        if la + lb > room:
            short = min(la, lb)
            long = max(short, room - short)
            if short + long > room:
                short, long = room // 2, room // 2 + room % 2
            la, lb = (short, long) if la <= lb else (long, short)
        sep = self.pad_id if self.sep_id is None else self.sep_id
        return [*self.prefix, *a[:la], sep, *b[:lb]]


# `chunks`: every window of a long text is read (data/chunks.py); `keep` alone keeps its first.
TRUNCATIONS = ("head", "tail", "head+tail", "chunks")


def keep(ids: list[int], max_length: int, truncation: str = "head", fixed: int = 0) -> list[int]:
    """The at most `max_length` tokens a truncation policy keeps of a longer sequence: its start
    (`head`), its end (`tail`), or the first half of `max_length` from the start and the rest from
    the end (`head+tail`: the opening and the closing of a long document). The first `fixed` ids
    (the tokenizer's `prefix`) are kept whatever the policy."""
    if len(ids) <= max_length:
        return ids
    if 0 < fixed < max_length:
        return ids[:fixed] + keep(ids[fixed:], max_length - fixed, truncation)
    if truncation in ("head", "chunks"):
        return ids[:max_length]
    if truncation == "tail":
        return ids[len(ids) - max_length:]
    first = (max_length + 1) // 2
    return ids[:first] + ids[len(ids) - (max_length - first):]


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with lone UTF-16 surrogates (valid in JSON and in Python strings, not in UTF-8, and
    refused by the tokenizers library) replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def get_tokenizer(name: str = "gpt2", *, bpe_dir: str | os.PathLike | None = None) -> Tokenizer:
    """GPT-2's tokenizer: tiktoken's `gpt2` encoding with `<|endoftext|>` (50256) as pad."""
    if name != "gpt2":
        raise UserError(f"unknown tokenizer {name!r}; Llama-family tokenizers come with their weights")
    import tiktoken

    bpe_dir = bpe_dir or os.environ.get(GPT2_BPE_ENV)
    if bpe_dir:
        enc = _gpt2_from_dir(Path(bpe_dir))
    else:
        try:
            enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken's download failed
            raise UserError(f"could not load tiktoken's gpt2 encoding ({type(e).__name__}); set {GPT2_BPE_ENV} "
                            "to a directory holding GPT-2's encoder.json and vocab.bpe") from None
    eot = enc.eot_token

    def encode(text: str) -> list[int]:
        return enc.encode(text, allowed_special={"<|endoftext|>"})

    return Tokenizer("gpt2", encode, enc.decode, pad_id=eot, vocab_size=enc.n_vocab,
                     source=str(bpe_dir) if bpe_dir else "tiktoken:gpt2", encoding=enc)


def _gpt2_from_dir(directory: Path):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    encoder, vocab = directory / "encoder.json", directory / "vocab.bpe"
    for f in (encoder, vocab):
        if not f.is_file():
            raise UserError(f"{f}: not found ({GPT2_BPE_ENV} must name a directory with encoder.json and vocab.bpe)")
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab), encoder_json_file=str(encoder),
            vocab_bpe_hash=GPT2_VOCAB_SHA256, encoder_json_hash=GPT2_ENCODER_SHA256,
        )
    except ValueError as e:
        raise UserError(f"{directory}: GPT-2 BPE files do not match their published sha256 ({e})") from None
    return tiktoken.Encoding(name="gpt2", explicit_n_vocab=50257, pat_str=r50k_pat_str,
                             mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256})


def wrap_hf_tokenizer(tok, pad_id: int, source: str) -> Tokenizer:
    """Our interface around a `tokenizers.Tokenizer`."""

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False)

    return Tokenizer("hf", encode, decode, pad_id=pad_id, vocab_size=tok.get_vocab_size(), source=source, hf=tok,
                     prefix=added_prefix(tok), sep_id=first_token(tok, SEP_CANDIDATES, None))


SEP_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>")  # end-of-text tokens


def first_token(tok, candidates: tuple, default):
    """The id of the first of `candidates` the vocabulary has, else `default`."""
    return next((tok.token_to_id(t) for t in candidates if tok.token_to_id(t) is not None), default)


def added_prefix(tok) -> tuple:
    """The ids the tokenizer's post-processor puts before a text (a BOS, for the models that
    want one), read from what it adds to a probe; what it adds after (an EOS) is left out."""
    body = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a", add_special_tokens=True).ids
    starts = [k for k in range(len(full) - len(body) + 1) if full[k:k + len(body)] == body]
    return tuple(full[:starts[0]]) if starts else ()


PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|im_end|>", "<|end_of_text|>", "</s>", "<eos>")


def tokenizer_from_json(path: str | os.PathLike, pad_id: int | None = None) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise UserError(f"{path}: not a readable tokenizer.json ({str(e)[:100]})") from None
    if pad_id is None:  # the model's own pad token, else its end-of-text token (padding is never attended to)
        pad_id = first_token(tok, PAD_CANDIDATES, 0)
    return wrap_hf_tokenizer(tok, pad_id, str(path))
