"""``herald sql --output FILE``: write a streamed SQL result to Parquet, CSV, JSON Lines or JSON.

Every row is written (the row limit is for a terminal). Batches arrive one at a time — from the
server's ``SqlStream`` or the store's, alike — and each is written before the next is read, so
memory stays bounded whatever the size. The file is written under ``FILE.part`` and renamed
only when complete: a failed export never leaves a file that looks whole.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.client.interface import SqlBatches
from collector.errors import InvalidInput


class ExportFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"
    JSON = "json"


_BY_SUFFIX = {
    ".parquet": ExportFormat.PARQUET,
    ".pq": ExportFormat.PARQUET,
    ".csv": ExportFormat.CSV,
    ".jsonl": ExportFormat.JSONL,
    ".ndjson": ExportFormat.JSONL,
    ".json": ExportFormat.JSON,
}

# Rows gathered before one Parquet row group is written: one row group per small batch would
# make a file that is slow to read; this many rows of events are a few tens of MB at most.
_PARQUET_GROUP_ROWS = 128 * 1024


def export_format(path: Path, fmt: str | None) -> ExportFormat:
    """The format named by ``--format``, else by the file's extension."""
    if fmt is not None:
        try:
            return ExportFormat(fmt)
        except ValueError:
            raise InvalidInput(
                f"--format {fmt!r} cannot be written to a file (use parquet, csv, jsonl or json)"
            ) from None
    kind = _BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise InvalidInput(
            f"--output: cannot tell the format from {path.suffix or 'no extension'!r} "
            "(use .parquet, .csv, .jsonl or .json, or give --format)"
        )
    return kind


def _batches(stream: SqlBatches, on_rows: Callable[[int], None]) -> Iterator[pa.RecordBatch]:
    rows = 0
    while (batch := stream.read_next()) is not None:
        rows += batch.num_rows
        yield batch
        on_rows(rows)


_TICKS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _iso_text(column: pa.Array) -> pa.Array:
    """ISO 8601 text of a timestamp column (UTC with ``Z`` when it has a time zone), as the API
    writes times.

    ``to_pylist`` builds a datetime per cell and ``strftime`` formats each cell: either was the
    slowest part of a JSON export by far. Rows of a batch share few distinct seconds, so only
    those are formatted, and the fraction is appended as digits (~3x faster; measured)."""
    kind = column.type
    per = _TICKS[kind.unit]
    ticks = column.cast(pa.int64())
    secs = pc.divide(ticks, per)
    frac = pc.subtract(ticks, pc.multiply(secs, per))
    before = pc.less(frac, 0)  # integer division truncates toward zero: before 1970, go back
    secs = pc.if_else(before, pc.subtract(secs, 1), secs)
    frac = pc.if_else(before, pc.add(frac, per), frac)
    seconds = pc.unique(secs)
    tz = "UTC" if kind.tz is not None else None
    names = pc.strftime(seconds.cast(pa.timestamp("s", tz=tz)), format="%Y-%m-%dT%H:%M:%S")
    parts = [pc.take(names, pc.index_in(secs, value_set=seconds))]
    if per > 1:
        parts += [".", pc.utf8_lpad(frac.cast(pa.string()), len(str(per)) - 1, "0")]
    if tz:
        parts.append("Z")
    return pc.binary_join_element_wise(*parts, "") if len(parts) > 1 else parts[0]


def _embedded_json(column: pa.ExtensionArray) -> list[Any]:
    """Values of a JSON column, embedded as they are (``orjson.Fragment``) rather than quoted
    as strings. DuckDB checked they are JSON; a raw line break in one can only be whitespace
    (inside a JSON string it is escaped), and would split a JSON Lines row: made a space."""
    text = column.storage
    if pc.any(pc.match_substring_regex(text, "[\r\n]")).as_py():
        text = pc.replace_substring_regex(text, "[\r\n]", " ")
    return [None if v is None else orjson.Fragment(v) for v in text.to_pylist()]


def _json_column(column: pa.Array) -> list[Any]:
    if isinstance(column.type, pa.JsonType):
        return _embedded_json(column)
    values: list[Any] = (
        _iso_text(column) if pa.types.is_timestamp(column.type) else column
    ).to_pylist()
    return values


def _json_lines(batch: pa.RecordBatch) -> bytes:
    names = batch.schema.names
    columns = [_json_column(c) for c in batch.columns]
    option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    return b"".join(
        orjson.dumps(dict(zip(names, row, strict=True)), default=str, option=option)
        for row in zip(*columns, strict=True)
    )


def _csv_column(column: pa.Array) -> pa.Array:
    """Columns CSV has no notation for (lists, structs, maps) become JSON text."""
    kind = column.type
    if isinstance(column, pa.ExtensionArray):  # JSON columns: their text
        return _csv_column(column.storage)
    if pa.types.is_nested(kind):
        return pa.array(
            [
                None if v is None else orjson.dumps(v, default=str).decode()
                for v in column.to_pylist()
            ],
            pa.string(),
        )
    if pa.types.is_dictionary(kind):
        return _csv_column(column.dictionary_decode())
    return column


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [_csv_column(c) for c in batch.columns], names=batch.schema.names
    )


def _write_parquet(stream: SqlBatches, out: BinaryIO, on_rows: Callable[[int], None]) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(out, stream.schema) as writer:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in _batches(stream, on_rows):
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= _PARQUET_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema=stream.schema))
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema=stream.schema))


def _write_csv(stream: SqlBatches, out: BinaryIO, on_rows: Callable[[int], None]) -> None:
    import pyarrow.csv as pcsv

    writer: Any = None
    for batch in _batches(stream, on_rows):
        batch = _csv_batch(batch)
        if writer is None:
            writer = pcsv.CSVWriter(out, batch.schema)
        writer.write_batch(batch)
    if writer is None:  # no rows: still the header
        empty = pa.RecordBatch.from_pylist([], schema=stream.schema)
        writer = pcsv.CSVWriter(out, _csv_batch(empty).schema)
    writer.close()


def _write_jsonl(stream: SqlBatches, out: BinaryIO, on_rows: Callable[[int], None]) -> None:
    for batch in _batches(stream, on_rows):
        out.write(_json_lines(batch))


def _write_json(stream: SqlBatches, out: BinaryIO, on_rows: Callable[[int], None]) -> None:
    # One JSON array, still written batch by batch: "[", rows joined by ",\n", "]".
    out.write(b"[")
    first = True
    for batch in _batches(stream, on_rows):
        lines = _json_lines(batch)
        if not lines:
            continue
        # orjson escapes newlines inside strings: every b"\n" here ends a row.
        out.write((b"\n" if first else b",\n") + b",\n".join(lines.rstrip(b"\n").split(b"\n")))
        first = False
    out.write(b"\n]\n" if not first else b"]\n")


_WRITERS = {
    ExportFormat.PARQUET: _write_parquet,
    ExportFormat.CSV: _write_csv,
    ExportFormat.JSONL: _write_jsonl,
    ExportFormat.JSON: _write_json,
}


@contextmanager
def _progress(path: Path) -> Iterator[Callable[[int], None]]:
    """A live row count on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("writing {task.description}: {task.completed:,} rows"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(str(path), total=None)
        yield lambda rows: progress.update(task, completed=rows)


def write_export(stream: SqlBatches, path: Path, kind: ExportFormat) -> tuple[int, float]:
    """Write every batch of ``stream`` to ``path``; returns (rows written, seconds)."""
    part = path.with_name(path.name + ".part")
    started = time.monotonic()
    rows = 0

    def count(n: int) -> None:
        nonlocal rows
        rows = n
        on_rows(n)

    try:
        with _progress(path) as on_rows, part.open("wb") as out:
            _WRITERS[kind](stream, out, count)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return rows, time.monotonic() - started
