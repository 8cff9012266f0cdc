"""Rendering of reading commands' results: ``--format table|json|jsonl|csv``.

Data goes to stdout, notes to stderr. Without ``--format``, a terminal gets a table and a pipe
gets JSON Lines, so scripts never parse a table by accident.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def resolve_format(fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    return OutputFormat.TABLE if sys.stdout.isatty() else OutputFormat.JSONL


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def render(
    records: Sequence[dict[str, Any]],
    fmt: OutputFormat | None,
    *,
    columns: Sequence[str] | None = None,
    table_rows: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> None:
    """Write ``records`` in ``fmt``. Tables may use ``table_rows`` (display forms of records)."""
    fmt = resolve_format(fmt)
    cols = list(columns or (records[0].keys() if records else []))
    if fmt is OutputFormat.JSON:
        typer.echo(json.dumps(list(records), indent=2, default=str))
    elif fmt is OutputFormat.JSONL:
        for record in records:
            typer.echo(json.dumps(record, default=str))
    elif fmt is OutputFormat.CSV:
        writer = csv.writer(sys.stdout)
        writer.writerow(cols)
        for record in records:
            writer.writerow([_cell(record.get(c)) for c in cols])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for c in cols:
            table.add_column(c, overflow="fold")
        rows = (
            table_rows
            if table_rows is not None
            else [[_cell(r.get(c)) for c in cols] for r in records]
        )
        for row in rows:
            table.add_row(*row)
        Console().print(table)


def note(message: str) -> None:
    """A human note on stderr (never mixed into data on stdout)."""
    typer.echo(message, err=True)
