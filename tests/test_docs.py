"""The reference in docs/ and the command line say the same: every option a command takes is
documented, and every `--option` the docs name is one a command takes (or torchrun's)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gptclassify.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
OTHERS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--max-restarts",
          "--standalone",  # torchrun's, in docs/operations.md
          "--no-deps"}  # pip's, in docs/export.md


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


def test_the_option_tables_are_made_from_the_code():
    """docs/generate.py writes every option table from the parser (training settings from `TrainConfig`,
    request limits from `Limits`): a table edited by hand, or a setting changed without them, fails here."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_changed_setting_shows_in_its_table(monkeypatch):
    """The generator reads the schema: a new help text for a setting appears in the train table."""
    import dataclasses
    import importlib.util

    from gptclassify.config import TrainConfig

    spec = importlib.util.spec_from_file_location("generate", DOCS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    epochs = next(f for f in dataclasses.fields(TrainConfig) if f.name == "epochs")
    monkeypatch.setattr(epochs, "metadata", {**epochs.metadata, "help": "a changed help text"})
    table = generate.table(generate.subparsers(build_parser())["train"])
    assert "| `--epochs` N | 5 | a changed help text |" in table
