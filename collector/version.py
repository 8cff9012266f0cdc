"""Herald's version, as installed (``pyproject.toml`` is the one place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"


def herald_version() -> str:
    """The installed ``herald`` distribution's version; ``0+unknown`` in a checkout that was
    never installed (``pip install -e .`` fixes that)."""
    try:
        return version("herald")
    except PackageNotFoundError:
        return UNKNOWN
