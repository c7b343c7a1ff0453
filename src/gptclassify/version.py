"""The package version, in one place (the package, its runs and its service report it)."""

__version__ = "0.1.0"
