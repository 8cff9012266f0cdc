"""`herald sql`: one read-only SQL statement against the store, shown or exported.

Shown (stdout): at most ``query.sql_max_rows`` rows and ``query.sql_max_result_bytes``, with a
note when more exist. Exported
(``--output FILE``): every row, streamed batch by batch into the file (``cli/_export.py``).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli._errors import handle_errors
from cli._export import export_format, write_export
from cli._output import OutputFormat, format_option, note, output_option, render
from cli._progress import waiting
from cli._readers import DbOpt, reader
from collector.errors import InvalidInput


class SqlFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


@handle_errors
def sql(
    ctx: typer.Context,
    query: Annotated[
        str, typer.Argument(help="one read-only statement (SELECT, WITH, DESCRIBE, …)")
    ],
    output: Annotated[
        Path | None,
        output_option("write every row to FILE (.parquet, .csv, .jsonl or .json; or --format)"),
    ] = None,
    fmt: Annotated[
        SqlFormat | None, format_option("table | json | jsonl | csv (| parquet with -o)")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Run one read-only SQL statement on the event store.

    Example: herald sql "SELECT event, count(*) FROM events GROUP BY ALL ORDER BY 2 DESC"

    Export every row: herald sql "SELECT * FROM events" --output events.parquet
    """
    if output is not None:
        if fmt is SqlFormat.TABLE:
            raise InvalidInput(
                "--format table is for a terminal; a file takes parquet, csv, jsonl or json"
            )
        kind = export_format(output, fmt.value if fmt is not None else None)
        with reader(ctx, db) as source, source.sql_stream(query, all_rows=True) as stream:
            rows, seconds = write_export(stream, output, kind)
        note(f"wrote {rows:,} row{'' if rows == 1 else 's'} to {output} ({seconds:.1f} s)")
        return
    if fmt is SqlFormat.PARQUET:
        raise InvalidInput("--format parquet needs --output FILE")
    with reader(ctx, db) as source, waiting("running the query…"):
        table, truncated = source.sql(query)
    render(
        table.to_pylist(),
        OutputFormat(fmt.value) if fmt is not None else None,
        columns=table.column_names,
    )
    if truncated:
        note(
            f"herald: showing the first {table.num_rows:,} rows (query.sql_max_rows, "
            "query.sql_max_result_bytes); "
            "--output FILE writes every row"
        )
