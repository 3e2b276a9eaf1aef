"""The package version, importable without the package's API (records read it)."""

__version__ = "0.1.0"
