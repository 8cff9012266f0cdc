"""Where reading commands get their data: the server (default) or a file (``--db PATH``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cli._state import state

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="<file>",
        help="read this DuckDB file directly (read-only; no server running)",
    ),
]


def reader(ctx: typer.Context, db: str | None) -> Any:
    """A HeraldClient, or a LocalReader on ``db``; both are context managers.

    Offline, the ``[query]`` limits come from the same places as the server's (``HERALD_CONFIG``
    file, then ``HERALD_QUERY__*``), since this process is the one applying them; online they
    are the server's settings, and setting them for the CLI changes nothing."""
    if db:
        from collector.config import load_config
        from collector.local import LocalReader

        config_file = os.environ.get("HERALD_CONFIG")
        config = load_config(Path(config_file) if config_file else None)
        return LocalReader(db, config.query)
    return state(ctx).client()
