"""The reference in docs/ and the command line say the same: every option a command takes is
documented, and every `--option` the docs name is one a command takes (or torchrun's)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gptclassify.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
OTHERS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--max-restarts",
          "--standalone"}  # torchrun's, in docs/operations.md


def command_flags() -> set[str]:
    flags = set()

    def walk(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.help != argparse.SUPPRESS:
                flags.update(o for o in action.option_strings if o.startswith("--") and o != "--help")

    walk(build_parser())
    return flags


def documented() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", text))


def test_every_option_is_documented():
    missing = command_flags() - documented()
    assert not missing, f"options no page of docs/ names: {sorted(missing)}"


def test_the_docs_name_no_option_that_does_not_exist():
    unknown = documented() - command_flags() - OTHERS
    assert not unknown, f"docs/ names options no command takes: {sorted(unknown)}"
