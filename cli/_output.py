"""Rendering of reading commands' results: ``--format table|json|jsonl|csv``, and the options
that choose where and how results go (``-f/--format``, ``-o/--output``), defined once here.

Data goes to stdout, notes to stderr. Without ``--format``, a terminal gets a table and a pipe
gets JSON Lines, so scripts never parse a table by accident.

Human output (tables, the one-line and detail views) shows stored text with its control
characters escaped (``shown``): an event name holding ``\\x1b[2J`` must not clear the user's
screen, a NUL must not cut a line, and ``[bold]`` is text, never rich markup. Machine formats
(JSON, JSON Lines, CSV) carry the exact values.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


# A short flag has one meaning in every command (docs/cli.md): -f is always --format, and -o
# always --output, a file that every row is written to.
FORMAT_FLAGS = ("--format", "-f")
OUTPUT_FLAGS = ("--output", "-o")


def format_option(help: str, *, metavar: str | None = None) -> Any:
    """``-f/--format`` for a command whose choices differ from ``FormatOpt``'s."""
    return typer.Option(*FORMAT_FLAGS, help=help, metavar=metavar)


def output_option(help: str) -> Any:
    """``-o/--output FILE``."""
    return typer.Option(*OUTPUT_FLAGS, metavar="<file>", help=help)


# What reading commands take: how ``render`` writes their records.
FormatOpt = Annotated[
    OutputFormat | None,
    format_option("table (default on a terminal) | json | jsonl | csv"),
]


def resolve_format(fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    return OutputFormat.TABLE if sys.stdout.isatty() else OutputFormat.JSONL


def _escapes() -> dict[int, str]:
    """Control characters → their Python escapes: C0, DEL, C1 (a terminal takes ``\\x9b`` as
    CSI), the line/paragraph separators and the bidi overrides (text that reads differently
    on screen than it is)."""
    table: dict[int, str] = {}
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        table[code] = named.get(chr(code), f"\\x{code:02x}")
    for code in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
        table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _escapes()
# In a table cell a line break stays in its cell (rich wraps inside the borders), and the
# commands' own multi-line cells rely on it; every other control character is escaped.
_CELL_ESCAPES = {k: v for k, v in _ESCAPES.items() if k != ord("\n")}


def shown(value: Any) -> str:
    """``value`` as text for a human: every control character escaped (``\\x1b``, ``\\n``)."""
    return ("" if value is None else str(value)).translate(_ESCAPES)


def _cell_text(value: Any) -> str:
    return ("" if value is None else str(value)).translate(_CELL_ESCAPES)


def console(*, stderr: bool = False) -> Console:
    """A rich Console whose write to a closed pipe raises ``BrokenPipeError`` (handled once, in
    ``cli._app``) instead of rich's own ``SystemExit(1)``."""
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _PipeConsole(stderr=stderr)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def render(
    records: Sequence[Mapping[str, Any]],
    fmt: OutputFormat | None,
    *,
    columns: Sequence[str] | None = None,
    table_rows: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> None:
    """Write ``records`` in ``fmt``. Tables may use ``table_rows`` (display forms of records).

    Table cells and headers are plain text (never rich markup) with control characters
    escaped; a line break inside a cell stays one."""
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
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(shown(title)) if title else None, show_lines=False)
        for c in cols:
            table.add_column(Text(shown(c)), overflow="fold")
        rows = (
            table_rows
            if table_rows is not None
            else [[_cell(r.get(c)) for c in cols] for r in records]
        )
        for row in rows:
            table.add_row(*(Text(_cell_text(cell)) for cell in row))
        console().print(table)


def note(message: str) -> None:
    """A human note on stderr (never mixed into data on stdout)."""
    typer.echo(message, err=True)
