"""Write the option tables of docs/ from the command line's own parser (whose training options come
from `config.TrainConfig`): every table sits between `<!-- options: COMMAND -->` and
`<!-- /options -->` and is never edited by hand.

    python docs/generate.py           # rewrite the tables
    python docs/generate.py --check   # exit 1 if a table differs from the code (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- options: ([a-z -]+) -->\n)(.*?)(<!-- /options -->)", re.S)
DEFAULT = re.compile(r"^(.*) \(default: (.*)\)$", re.S)


def subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name (`train`, `prepare csv`, `cache clear`, ...)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(subparsers(sub, f"{prefix}{name} "))
    return found


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(action: argparse.Action) -> str | None:
    if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
        return None
    help_text, default = action.help or "", ""
    if m := DEFAULT.match(help_text):
        help_text, default = m.group(1), m.group(2)
    elif action.default not in (None, False, [], argparse.SUPPRESS):
        default = str(action.default)
    if action.option_strings:
        name = ", ".join(f"`{o}`" for o in action.option_strings if o.startswith("--"))
        if action.metavar or action.nargs != 0 and not action.choices:
            name += f" {action.metavar or action.dest.upper().replace('_', '-')}"
    else:
        name = f"`{action.metavar or action.dest.upper()}`" + (" ..." if action.nargs == "*" else "")
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        help_text = f"{help_text}; one of {', '.join(f'`{c}`' for c in action.choices)}".lstrip("; ")
    if action.required and action.nargs not in ("*", "?"):
        default = "required"
    return f"| {name} | {cell(default)} | {cell(help_text)} |"


def table(parser: argparse.ArgumentParser) -> str:
    rows = [r for r in map(row, parser._actions) if r]
    return "| option | default | |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def rendered(text: str, commands: dict) -> str:
    def fill(m: re.Match) -> str:
        if m.group(2) not in commands:
            raise SystemExit(f"docs: no command {m.group(2)!r}")
        return m.group(1) + table(commands[m.group(2)]) + m.group(4)

    return BLOCK.sub(fill, text)


def main() -> int:
    sys.path.insert(0, str(DOCS.parent / "src"))
    from gptclassify.cli import build_parser

    check = "--check" in sys.argv[1:]
    commands, stale = subparsers(build_parser()), []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = rendered(text, commands)
        if new != text:
            stale.append(page.name)
            if not check:
                page.write_text(new, encoding="utf-8")
    if check and stale:
        print(f"option tables out of date in {', '.join(stale)}: run python docs/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
