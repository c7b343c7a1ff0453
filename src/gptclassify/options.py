"""Settings defined once: a dataclass field carries its flag, help, choices and range, and the
command line, the checks and the docs' option tables are all read from it.

    epochs: int = setting(5, "passes over the training data", at_least=1)

`add_options` makes the argparse flags (default None: "not given", so presets and model-family
defaults can fill what the user left open), `check_settings` refuses a value outside its range in
one line, and `docs/generate.py` writes the tables in docs/ from the same fields.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, Field, field, fields

from .errors import UserError

MAX_COUNT = 2 ** 31 - 1  # the most of anything counted (epochs, steps, texts): beyond, Python's C sizes overflow


def setting(default, help: str, *, flag: str | None = None, choices=None, metavar: str | None = None,
            at_least: float | None = None, above: float | None = None, at_most: float | None = None,
            default_text: str | None = None, cli: bool = True, unit: str = "") -> Field:
    """A dataclass field that is also a command-line option (unless `cli=False`)."""
    return field(default=default, metadata=dict(
        help=help, flag=flag, choices=tuple(choices) if choices else None, metavar=metavar, at_least=at_least,
        above=above, at_most=at_most, default_text=default_text, cli=cli, unit=unit))


def settings_of(cls) -> list[Field]:
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_of(f: Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def kind_of(f: Field) -> type:
    """bool, int, float or str, from the field's annotation (a string under `from __future__ import annotations`)."""
    names = str(f.type).replace(" ", "").split("|")
    for kind in (bool, int, float, str):
        if kind.__name__ in names:
            return kind
    raise TypeError(f"{f.name}: no option type for {f.type}")


def default_text(f: Field) -> str:
    if f.metadata["default_text"] is not None:
        return f.metadata["default_text"]
    if f.default is None or f.default is MISSING:
        return "off"
    if kind_of(f) is bool:
        return "on" if f.default else "off"
    return str(f.default)


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per command-line setting of `cls`; every default None (not given)."""
    for f in settings_of(cls):
        if not f.metadata["cli"]:
            continue
        help_text = f"{f.metadata['help']} (default: {default_text(f)})"
        kind, flag = kind_of(f), flag_of(f)
        if kind is bool:  # a switch: its flag sets the opposite of the default
            parser.add_argument(flag, dest=f.name, action="store_const", const=not f.default, help=help_text)
        else:
            metavar = f.metadata["metavar"] or (None if f.metadata["choices"] else {int: "N", float: "X"}.get(kind))
            parser.add_argument(flag, dest=f.name, type=kind, choices=f.metadata["choices"], metavar=metavar,
                                help=help_text)


def check_settings(obj) -> None:
    """Every setting of `obj` within its choices and range, or a one-line error naming its flag."""
    for f in settings_of(type(obj)):
        value, m, flag = getattr(obj, f.name), f.metadata, flag_of(f)
        if value is None:
            continue
        kind = kind_of(f)
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{flag} must be a number, not {value!r}")
        if kind is float and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number")
        if m["choices"] and value not in m["choices"]:
            raise UserError(f"{flag} must be one of {', '.join(m['choices'])}")
        unit = f" {m['unit']}" if m["unit"] else ""
        if m["at_least"] is not None and value < m["at_least"]:
            raise UserError(f"{flag} must be {m['at_least']:g} or more{unit}")
        if m["above"] is not None and value <= m["above"]:
            raise UserError(f"{flag} must be above {m['above']:g}")
        most = m["at_most"] if m["at_most"] is not None else MAX_COUNT if kind is int else None
        if most is not None and value > most:
            raise UserError(f"{flag} must be at most {most:,}{unit}")


def options_table(cls) -> list[tuple[str, str, str]]:
    """(flag, default, help) of each command-line setting: the rows of the docs' option tables."""
    return [(flag_of(f), default_text(f), f.metadata["help"]) for f in settings_of(cls) if f.metadata["cli"]]
