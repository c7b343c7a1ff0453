"""The one exception type that means "the user gave us something we cannot use"."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable host: shown as one line, exit status 1."""
