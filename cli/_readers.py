"""Where reading commands get their data: the server (default) or a file (``--db PATH``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli._state import state

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="read this DuckDB file directly (read-only; no server running)"),
]


def reader(ctx: typer.Context, db: str | None) -> Any:
    """A HeraldClient, or a LocalReader on ``db``; both are context managers."""
    if db:
        from collector.local import LocalReader

        return LocalReader(db)
    return state(ctx).client()
