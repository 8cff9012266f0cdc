"""`herald store`: the store itself rather than its events — moving a single-file store into
a DuckLake that several collectors share (docs/scale-out.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._app import HeraldTyper
from cli._errors import fail, handle_errors
from collector.client.lake_migration import migrate_file_to_lake

app = HeraldTyper(help="The store itself: migrate a single-file store into a DuckLake.")


@app.command()
@handle_errors
def migrate(
    to_ducklake: Annotated[
        bool, typer.Option("--to-ducklake", help="copy the events into a DuckLake")
    ] = False,
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="HERALD_STORAGE__PATH",
            metavar="<file>",
            help="the Herald store file to copy from (stop `herald serve` on it first)",
        ),
    ] = "herald.duckdb",
    catalog: Annotated[
        str,
        typer.Option(
            "--catalog",
            envvar="HERALD_STORAGE__CATALOG",
            metavar="<catalog>",
            help="the lake's catalog, as storage.catalog: 'postgres:dbname=… host=…', "
            "'sqlite:PATH' or 'duckdb:PATH'",
        ),
    ] = "",
    data_path: Annotated[
        str,
        typer.Option(
            "--data-path",
            envvar="HERALD_STORAGE__DATA_PATH",
            metavar="<dir>",
            help="the lake's data path, as storage.data_path",
        ),
    ] = "",
) -> None:
    """Copy every event of a single-file store into a DuckLake (created if new).

    Safe to run again: events already in the lake are skipped, so a run that stopped
    half-way is finished by the next one, even while collectors write to the lake.

    Example: herald store migrate --to-ducklake --db herald.duckdb
    --catalog "postgres:dbname=herald host=db.internal user=herald" --data-path /srv/lake/
    """
    if not to_ducklake:
        raise fail("say where to: --to-ducklake (the only target)")
    if not catalog or not data_path:
        raise fail("--to-ducklake needs --catalog and --data-path")

    def progress(read: int, total: int) -> None:
        typer.echo(f"copied {read:,} of {total:,} events", err=True)

    done = migrate_file_to_lake(db, catalog, data_path, progress)
    typer.echo(
        f"{done.read:,} events read from {db}: {done.copied:,} copied into the lake, "
        f"{done.skipped:,} already there"
    )
