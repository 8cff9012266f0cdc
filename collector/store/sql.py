"""User SQL (``herald sql``): one read-only statement, a time limit and a row limit.

Defence in depth: (1) exactly one statement, starting with SELECT/WITH/FROM/DESCRIBE/SHOW/
EXPLAIN/SUMMARIZE (EXPLAIN ANALYZE only of a query); (2) it runs in a ``READ ONLY``
transaction that is rolled back; (3) the database was opened with external access disabled and
the configuration locked (``EventStore``), so ``read_csv('/etc/passwd')``, ``COPY … TO``,
``ATTACH``, ``INSTALL``/``LOAD`` fail inside DuckDB even if they got this far.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from collector.errors import InvalidSql

_ALLOWED = ("select", "with", "from", "describe", "show", "explain", "summarize", "values", "(")
_FIRST_WORD = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([a-z(]+)", re.I | re.S)
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analyze\s+)?(.*)$", re.I | re.S)


@dataclass(frozen=True, slots=True)
class SqlResult:
    """The result as an Arrow table (types kept for parquet/CSV/JSON export), and whether rows
    were cut at the row limit."""

    table: pa.Table
    truncated: bool

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        columns = [c.to_pylist() for c in self.table.columns]
        return list(zip(*columns, strict=True)) if columns else []


def check_readonly(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``InvalidSql`` unless ``sql`` is one statement of an allowed read-only kind."""
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidSql(f"SQL does not parse: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise InvalidSql(f"send exactly one statement (got {len(statements)})")
    m = _FIRST_WORD.match(sql)
    word = m.group(1).lower() if m else ""
    if not word.startswith(_ALLOWED):
        raise InvalidSql(
            f"only read-only queries are allowed (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN, "
            f"SUMMARIZE); got {word.upper() or 'nothing'}"
        )
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.match(sql)
        if inner:
            check_readonly(conn, inner.group(1))
        return
    if kind != duckdb.StatementType.SELECT:
        raise InvalidSql(f"only read-only queries are allowed; this is a {kind.name} statement")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


def run_readonly(
    cursor: duckdb.DuckDBPyConnection, sql: str, *, timeout: float, max_rows: int
) -> SqlResult:
    """Run ``sql`` on ``cursor`` (its own cursor: it may be interrupted) under the limits."""
    check_readonly(cursor, sql)
    timer = threading.Timer(timeout, cursor.interrupt)
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    timer.start()
    try:
        cursor.execute(sql)
        reader = cursor.fetch_record_batch(rows_per_batch=min(max_rows + 1, 100_000))
        batches: list[pa.RecordBatch] = []
        count = 0
        while count <= max_rows:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            batches.append(batch)
            count += batch.num_rows
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise InvalidSql(f"query stopped after the {timeout:g} s time limit") from None
    except duckdb.PermissionException as exc:
        raise InvalidSql(
            f"refused: user SQL may not read or write files, reach the network or load "
            f"extensions ({_first_line(exc)})"
        ) from None
    except duckdb.Error as exc:
        message = _first_line(exc)
        if "read-only" in message or "read only" in message:
            raise InvalidSql(f"refused: user SQL is read-only ({message})") from None
        raise InvalidSql(message) from None
    finally:
        timer.cancel()
        try:
            cursor.execute("ROLLBACK")
        except duckdb.Error:
            pass
    return SqlResult(table=table.slice(0, max_rows), truncated=table.num_rows > max_rows)
