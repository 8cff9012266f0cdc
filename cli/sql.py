"""`herald sql`: one read-only SQL statement against the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli._errors import handle_errors
from cli._output import OutputFormat, note, render
from cli._readers import DbOpt, reader
from collector.errors import InvalidInput


def write_output(table, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Write an Arrow table as parquet, CSV or JSON, chosen by the file extension."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    elif suffix == ".json":
        path.write_text(json.dumps(table.to_pylist(), default=str, indent=2))
    elif suffix == ".jsonl":
        with path.open("w") as out:
            for row in table.to_pylist():
                out.write(json.dumps(row, default=str) + "\n")
    else:
        raise InvalidInput(f"--output: unknown extension {suffix!r} (use .parquet, .csv, .json)")


@handle_errors
def sql(
    ctx: typer.Context,
    query: Annotated[
        str, typer.Argument(help="one read-only statement (SELECT, WITH, DESCRIBE, …)")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to FILE.parquet|.csv|.json")
    ] = None,
    fmt: Annotated[
        OutputFormat | None, typer.Option("--format", "-f", help="table | json | jsonl | csv")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Run one read-only SQL statement on the event store.

    Example: herald sql "SELECT event, count(*) FROM events GROUP BY ALL ORDER BY 2 DESC"
    """
    with reader(ctx, db) as source:
        table, truncated = source.sql(query)
    if output is not None:
        write_output(table, output)
        note(f"wrote {table.num_rows} rows to {output}")
    else:
        render(table.to_pylist(), fmt, columns=table.column_names)
    if truncated:
        note(f"herald: showing the first {table.num_rows} rows (the server's row limit)")
