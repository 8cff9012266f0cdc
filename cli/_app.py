"""How every ``herald`` command behaves as a program, whatever it does: its help screen and
its exit when the reader of its output goes away.

* Help: typer's rich help shows a type for every option, ``<bool>`` even for flags, which
  take no value (``--yes``, ``--help``). Flags show none here; options that take a value
  name it with a ``metavar`` where they are declared (``--label <k=v>``).
* A closed pipe (``herald events ls | head -1``): the reader has what it asked for, so the
  command stops writing and exits 0, quietly. Click would exit 1 and rich would raise
  ``SystemExit(1)``; with ``set -o pipefail`` either fails the user's script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

# `-h` as well as `--help`: what a new user types first. Inherited by every subcommand.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def _no_type_for_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # shown as nothing (typer would show "<bool>")
    return params


@contextmanager
def _quiet_on_closed_pipe() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        # Later writes (and the flush at interpreter exit) go nowhere instead of raising
        # again and printing "Exception ignored … BrokenPipeError" (Python's SIGPIPE note).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout is no file (captured, closed): nothing to flush
            pass
        raise typer.Exit(0) from None


class HeraldCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_for_flags(super().get_params(ctx))


class HeraldGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_for_flags(super().get_params(ctx))

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_on_closed_pipe():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _quiet_on_closed_pipe():
            result = super().invoke(ctx)
            # Flushed here, where a closed pipe is still ours to handle, not at exit.
            sys.stdout.flush()
            return result


class HeraldTyper(typer.Typer):
    """A ``typer.Typer`` whose groups and commands are the classes above."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", HeraldGroup)
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        kwargs.setdefault("pretty_exceptions_show_locals", False)
        super().__init__(**kwargs)

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", HeraldCommand)
        return super().command(*args, **kwargs)
