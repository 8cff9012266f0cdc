"""The one place Herald errors become CLI messages and exit codes (no tracebacks for users)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from collector import errors as e

P = ParamSpec("P")
R = TypeVar("R")

_EXIT: list[tuple[type[e.HeraldError], int, str]] = [
    (e.ConfigError, 2, "config error"),
    (e.ServerUnreachable, 3, "error"),
    (e.Busy, 4, "server busy, retry later"),
    # The store could not be read (not a Herald store, locked, damaged): exit 4, as in
    # docs/architecture.md, so scripts tell it from a bad argument (1).
    (e.StoreError, 4, "store error"),
    (e.Unauthenticated, 5, "not authenticated"),
    (e.PermissionDenied, 5, "permission denied"),
    (e.HeraldError, 1, "error"),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise.

    Control characters are escaped: messages quote user input and stored names."""
    from cli._output import shown

    typer.echo(f"herald: {shown(message)}", err=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn Herald errors raised by a command into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except e.HeraldError as exc:
            hint = ""
            if isinstance(exc, e.ServerUnreachable):
                hint = "; --address or HERALD_ADDRESS sets the server's gRPC host:port"
            for kind, code, prefix in _EXIT:
                if isinstance(exc, kind):
                    raise fail(f"{prefix}: {exc}{hint}", code) from None
            raise

    return wrapper
