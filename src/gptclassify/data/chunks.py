"""Long texts as windows (`--truncation chunks`): a text longer than `max_length` is cut into
windows of `max_length` tokens that share `overlap` tokens with their neighbours; each window goes
through the model as a text of its own, and the classifier combines the windows' logits into the
text's (`classifier.pooling.combine_windows`).

Up to `max_chunks` windows cover the whole text, the last one ending at its end. A text that would
need more gets `max_chunks` windows spread evenly from its start to its end (the first at the
start, the last at the end), so its opening, middle and closing are all read; the tokens between
them are dropped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UserError

DEFAULT_MAX_CHUNKS = 8


@dataclass(frozen=True)
class Chunking:
    max_chunks: int = DEFAULT_MAX_CHUNKS
    overlap: int | None = None  # tokens neighbouring windows share; None: an eighth of the window

    def overlap_for(self, max_length: int, fixed: int = 0) -> int:
        """The overlap used for windows of `max_length` tokens whose first `fixed` are the model's prefix."""
        body = max_length - fixed
        overlap = body // 8 if self.overlap is None else self.overlap
        if overlap >= body:
            raise UserError(f"--chunk-overlap {overlap} must be under the window's {body} tokens of text "
                            "(--max-length less the model's start token)")
        return overlap


def encode_whole(tokenizer, text: str, max_length: int, chunking: Chunking) -> list[int]:
    """A text's ids as far as `max_chunks` windows can read them: a text too long to be worth
    encoding whole keeps its start and its end (`Tokenizer.encode`'s character budget)."""
    return tokenizer.encode(text, max_length * chunking.max_chunks, "head+tail")


def window_starts(n: int, body: int, overlap: int, max_chunks: int) -> list[int]:
    """Where each window of `body` tokens starts in a text of `n` tokens."""
    if n <= body:
        return [0]
    step = body - overlap
    needed = 1 + math.ceil((n - body) / step)
    if needed <= max_chunks:
        return [min(i * step, n - body) for i in range(needed)]
    if max_chunks == 1:
        return [0]
    return [round(i * (n - body) / (max_chunks - 1)) for i in range(max_chunks)]


def windows(ids: list[int], max_length: int, chunking: Chunking, fixed: int = 0) -> list[list[int]]:
    """The windows of one text's ids (the first `fixed`, the model's prefix, start every window)."""
    head, body_ids = ids[:fixed], ids[fixed:]
    body = max_length - fixed
    overlap = chunking.overlap_for(max_length, fixed)
    return [head + body_ids[s:s + body] for s in window_starts(len(body_ids), body, overlap, chunking.max_chunks)]


def dropped_tokens(n: int, max_length: int, chunking: Chunking, fixed: int = 0) -> int:
    """Tokens of a text of `n` ids that no window reads (texts needing more than `max_chunks` windows)."""
    body, covered, end = max_length - fixed, 0, 0
    for s in window_starts(n - fixed, body, chunking.overlap_for(max_length, fixed), chunking.max_chunks):
        covered += min(s + body, n - fixed) - max(s, end)
        end = min(s + body, n - fixed)
    return max(0, n - fixed - covered)
