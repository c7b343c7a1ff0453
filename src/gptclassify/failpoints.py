"""Failpoints: named places where a test can have the process killed outright (SIGKILL), to prove
that a run killed at that moment resumes to the same end. Off unless GPTCLASSIFY_FAILPOINT names
one (`name`, or `name:N` for its N-th pass); nothing else in the program reads it."""

from __future__ import annotations

import os
import signal

from .errors import UserError

_passes: dict[str, int] = {}


def failpoint(name: str) -> None:
    wanted = os.environ.get("GPTCLASSIFY_FAILPOINT")
    if not wanted or wanted.split(":")[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    count = wanted.split(":", 1)[1] if ":" in wanted else None
    if count is not None and not count.isdigit():
        raise UserError(f"GPTCLASSIFY_FAILPOINT={wanted!r}: the pass after ':' must be a number")
    if count is None or int(count) == _passes[name]:
        os.kill(os.getpid(), signal.SIGKILL)
