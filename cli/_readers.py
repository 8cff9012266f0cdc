"""Where reading commands get their data: the server (default) or a file (``--db PATH``).

Both are a ``HeraldReader`` (``collector/client/interface.py``), so each reading command is
written once and works online and offline alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli._state import state

if TYPE_CHECKING:
    from collector.client.interface import HeraldReader

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="<file>",
        help="read this DuckDB file directly (read-only; no server running)",
    ),
]


def reader(ctx: typer.Context, db: str | None) -> HeraldReader:
    """A ``HeraldClient``, or a ``LocalReader`` on ``db``; use it as a context manager.

    Offline, the ``[query]`` limits come from the same places as the server's (``HERALD_CONFIG``
    file, then ``HERALD_QUERY__*``), since this process is the one applying them; online they
    are the server's settings, and setting them for the CLI changes nothing."""
    if db:
        from collector.client.local import LocalReader
        from collector.config import load_config

        config_file = os.environ.get("HERALD_CONFIG")
        config = load_config(Path(config_file) if config_file else None)
        return LocalReader(db, config.query)
    return state(ctx).client()
