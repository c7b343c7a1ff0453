"""GPT-2's tokenizer as the files other tools read, rebuilt from tiktoken's encoding: the slow
tokenizer's `vocab.json` and `merges.txt`, and the tokenizers library's `tokenizer.json`. An
exported GPT-2 run carries them, so transformers, and a service without tiktoken, tokenize as
training did (tests/test_export.py checks it on the SMS messages).

tiktoken keeps only each token's rank; the merge that made a token is found by running BPE on its
bytes with the merges of lower rank (the way transformers converts tiktoken files): it stops at the
two parts the token's own merge joins.
"""

from __future__ import annotations

from functools import lru_cache

END_OF_TEXT = "<|endoftext|>"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (its vocab.json spells tokens in these)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _parts(ranks: dict[bytes, int], token: bytes, below: int) -> list[bytes]:
    """`token`'s bytes merged by BPE using only merges of rank under `below`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = min(((ranks.get(parts[i] + parts[i + 1], below), i) for i in range(len(parts) - 1)))
        if best[0] >= below:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def vocab_and_merges(encoding) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiktoken byte-level BPE encoding as vocab.json's token -> id and merges.txt's pairs, in rank order."""
    spell = bytes_to_unicode()
    text = lambda b: "".join(spell[x] for x in b)  # noqa: E731
    eot = encoding.eot_token
    tokens = [encoding.decode_single_token_bytes(i) for i in range(eot)]
    ranks = {t: i for i, t in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        if len(token) > 1:
            left, right = _parts(ranks, token, rank)
            merges.append((text(left), text(right)))
    vocab = {text(t): i for i, t in enumerate(tokens)}
    vocab[END_OF_TEXT] = eot
    return vocab, merges


def gpt2_tokenizers_json(encoding):
    """The `tokenizers.Tokenizer` that tokenizes as `encoding` (GPT-2's tiktoken) does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = vocab_and_merges(encoding)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([END_OF_TEXT])
    return tok
