"""User SQL (``herald sql``): one read-only statement under a time limit, a row limit and a
result-size limit.

``SqlStream`` runs the statement and hands out its result as Arrow record batches, one at a
time, so an export of any size passes with bounded memory (no row or size limit then, and its
own time limit: ``query.sql_export_timeout_seconds``); ``run_readonly`` collects one under the
terminal's limits (``query.sql_max_rows``, ``query.sql_max_result_bytes``,
``query.sql_timeout_seconds``). Both go through the same checks.

Defence in depth: (1) ``sql_sandbox.check_readonly``: one SELECT (or EXPLAIN of one) whose
parse tree names no file reader, maintenance function or server path; (2) it runs in a
``READ ONLY`` transaction that is rolled back; (3) the database was opened with external access
disabled and the configuration locked (``EventStore``), so ``COPY … TO``, ``ATTACH``,
``INSTALL``/``LOAD`` fail inside DuckDB even if they got this far.

The time limit is a timer that interrupts DuckDB. DuckDB checks for an interrupt between
vectors, not inside one function call: ``repeat('x', 1000000000)`` builds its value in one
call of ~11 s and only then stops. So a caller waits for a statement at most its limit plus
``ANSWER_GRACE_SECONDS`` and then answers "time limit" whether or not DuckDB has stopped yet
(the server's SQL lane keeps the statement's slot until it has).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from collector.errors import InvalidSql
from collector.store.sql_sandbox import check_readonly


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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


# DuckDB hands Arrow this many rows at a time. A multiple of its 2,048-row vector; small enough
# that a batch of large events stays a few MB (the gRPC stream cuts it into chunks anyway).
BATCH_ROWS = 8_192

# How long past its time limit a caller waits for a statement before it answers "time limit"
# anyway (module docstring): the interrupt usually lands within milliseconds.
ANSWER_GRACE_SECONDS = 0.5


def time_limit_error(seconds: float | None) -> InvalidSql:
    """The error of a statement stopped (or given up on) at its time limit."""
    return InvalidSql(f"query stopped after the {seconds or 0:g} s time limit")


class SqlStream:
    """One read-only statement, open: its Arrow ``schema`` and its record batches, read one at
    a time (``read_next``) so a result of any size passes with bounded memory.

    Owns ``cursor``: the statement runs in a ``READ ONLY`` transaction that ``close()`` rolls
    back before closing the cursor. ``max_rows`` and ``max_bytes`` (``None``: no limit) cut the
    result and set ``truncated``; ``timeout`` (``None``: none) stops the statement, checked by
    a timer that interrupts DuckDB mid-batch and between batches (an idle cursor ignores
    interrupts); ``deadline`` is when (``time.monotonic()``). Every failure is ``InvalidSql``
    with DuckDB's first line.

    ``close()`` may come from another thread while a read runs (a server stream whose client
    went away, or whose read ran past the time limit): it interrupts the read and returns at
    once; the reading thread ends the transaction when DuckDB lets go of it.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        sql: str,
        *,
        timeout: float | None,
        max_rows: int | None,
        max_bytes: int | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self._cursor = cursor
        self._timeout = timeout
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._timer: threading.Timer | None = None
        self.deadline: float | None = None
        self._done = False
        self._closed = False
        self._finished = False
        # Guards the two flags below (held for a moment, never across a DuckDB call).
        self._state = threading.Lock()
        self._reading = False
        self.rows = 0
        self.bytes = 0
        self.truncated = False
        try:
            check_readonly(cursor, sql)
            cursor.execute("BEGIN TRANSACTION READ ONLY")
        except BaseException:
            self.close()
            raise
        if timeout is not None:
            self.deadline = time.monotonic() + timeout
            self._timer = threading.Timer(timeout, cursor.interrupt)
            self._timer.daemon = True
            self._timer.start()
        try:
            with self._errors():
                cursor.execute(sql)
                self._reader = cursor.fetch_record_batch(rows_per_batch=batch_rows)
        except BaseException:
            self.close()
            raise
        # DuckDB hands JSON columns to Arrow as plain strings; marking them with Arrow's JSON
        # type keeps what they are: Parquet files get the JSON logical type, JSON exports embed
        # the values instead of quoting them. (The description lists the result's columns in
        # the schema's order.)
        schema = self._reader.schema
        self._json_columns = [
            i
            for i, column in enumerate(cursor.description or [])
            if str(column[1]) == "JSON" and pa.types.is_string(schema.field(i).type)
        ]
        for i in self._json_columns:
            schema = schema.set(i, schema.field(i).with_type(pa.json_(pa.string())))
        self.schema: pa.Schema = schema

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except duckdb.InterruptException:
            raise self._timed_out() from None
        except duckdb.PermissionException as exc:
            raise InvalidSql(
                f"refused: user SQL may not read or write files, reach the network or load "
                f"extensions ({_first_line(exc)})"
            ) from None
        except duckdb.OutOfMemoryException as exc:
            raise InvalidSql(
                f"the query needs more memory than the store may use (query.sql_memory_limit) "
                f"or spill (query.sql_spill_limit): {_first_line(exc)}"
            ) from None
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # Errors raised while DuckDB fills an Arrow batch come back through pyarrow.
            message = _first_line(exc)
            if "INTERRUPT" in message:
                raise self._timed_out() from None
            if "read-only" in message or "read only" in message:
                raise InvalidSql(f"refused: user SQL is read-only ({message})") from None
            raise InvalidSql(message) from None

    def _timed_out(self) -> InvalidSql:
        if self._closed and (self.deadline is None or time.monotonic() < self.deadline):
            return InvalidSql("the query was closed")
        return time_limit_error(self._timeout)

    def read_next(self) -> pa.RecordBatch | None:
        """The next batch of rows, or ``None`` at the end (or at a limit)."""
        with self._state:
            # (Read into locals: ``close()`` on another thread may change them during the read.)
            closed, reading = self._closed, self._reading
            if not closed and not reading:
                self._reading = True
        if closed:
            raise InvalidSql("the query was closed")
        if reading:
            raise RuntimeError("SqlStream.read_next called while a read is running")
        try:
            return self._read_next()
        finally:
            with self._state:
                self._reading = False
                closed = self._closed
            if closed:  # closed while this read ran: this thread ends the transaction
                self._finish()

    def _read_next(self) -> pa.RecordBatch | None:
        if self._done:
            return None
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise self._timed_out()
        batch = self._fetch()
        if batch is None:
            self._done = True
            return None
        if self._max_rows is not None and self.rows + batch.num_rows > self._max_rows:
            batch = batch.slice(0, self._max_rows - self.rows)
            self.truncated = True
            self._done = True
        elif self._max_rows is not None and self.rows + batch.num_rows == self._max_rows:
            # Exactly at the limit: truncated only if at least one more row follows.
            self._done = True
            more = self._fetch()
            self.truncated = more is not None and more.num_rows > 0
        if self._max_bytes is not None and self.bytes + batch.nbytes > self._max_bytes:
            batch = _cut_to_bytes(batch, self._max_bytes - self.bytes)
            self.truncated = True
            self._done = True
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self._json_columns:
            columns = batch.columns
            for i in self._json_columns:
                columns[i] = pa.ExtensionArray.from_storage(pa.json_(pa.string()), columns[i])
            batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        return batch

    def _fetch(self) -> pa.RecordBatch | None:
        with self._errors():
            try:
                return self._reader.read_next_batch()
            except StopIteration:
                return None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.read_next()) is not None:
            yield batch

    def read_all(self) -> pa.Table:
        """Every remaining batch as one table (use only under a row limit)."""
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        """End the transaction (rolled back: nothing was written) and close the cursor — now,
        or, if a read is running on another thread, by that thread once DuckDB returns."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        if self._timer is not None:
            self._timer.cancel()
        if reading:
            self._cursor.interrupt()
            return
        self._finish()

    def _finish(self) -> None:
        with self._state:
            if self._finished:
                return
            self._finished = True
        try:
            self._cursor.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction was open (the statement failed its checks)
        try:
            self._cursor.close()
        except duckdb.Error:
            pass

    def __enter__(self) -> SqlStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_to_bytes(batch: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The longest head of ``batch`` of at most ``budget`` bytes (Arrow counts a slice's own
    buffer ranges), found by halving an estimate."""
    if budget <= 0 or batch.num_rows == 0:
        return batch.slice(0, 0)
    rows = min(batch.num_rows, max(1, batch.num_rows * budget // max(1, batch.nbytes)))
    head = batch.slice(0, rows)
    while rows > 0 and head.nbytes > budget:
        rows //= 2
        head = batch.slice(0, rows)
    return head


def run_readonly(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    timeout: float,
    max_rows: int,
    max_bytes: int | None = None,
) -> SqlResult:
    """Run ``sql`` on ``cursor`` (its own cursor: it may be interrupted; closed here) under the
    time, row and size limits, and collect the result (the terminal's path; exports stream)."""
    with SqlStream(cursor, sql, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes) as stream:
        table = stream.read_all()
        return SqlResult(table=table, truncated=stream.truncated)
