"""The one exception type that means "the user gave us something we cannot use"."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable host: shown as one line, exit status 1."""


def env_number(name: str, default: float, what: str, minimum: float = 0.0) -> float:
    """A number from the environment variable `name` (`default` when unset), refused in one line when
    it is not a finite number of at least `minimum`."""
    import math
    import os

    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise UserError(f"{name}={raw!r} is not {what} (a number of at least {minimum:g})")
    return value
