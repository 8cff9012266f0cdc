"""``EventStore``: the DuckDB file, its connection and its reader cursors. The ``EventLog`` of
``collector/domain/event_store.py``; its cursors never leave ``collector/store/``.

One read-write connection per process (DuckDB allows one writing process per file). Writes come
only from the ``BatchWriter`` thread; reads use their own cursors. Inserts go through Arrow
(``INSERT … SELECT FROM arrow``), never row by row; a re-sent event is a no-op (dedupe, see
``INSERT_SQL``). Labels and payloads travel as Arrow's canonical JSON extension
type, which DuckDB takes as ``JSON`` without re-parsing.

Checkpoints are Herald's, never DuckDB's own. Measured on DuckDB 1.4.4: once the WAL holds a
delete or an update (retention, automation state), a checkpoint — a ``CHECKPOINT`` statement
*or* the automatic one inside a commit — waits, spinning a core and deaf to ``interrupt()``,
until every query in flight on any cursor has finished, and while it waits no other statement
runs at all. A reader left open therefore froze the whole store (issue 8: a result left
unconsumed on the main connection by the migration check wedged every store older than its
retention). So DuckDB's automatic checkpoint is turned off, the store counts the reader cursors
it hands out, and ``checkpoint`` runs only when none is open: it holds new readers back at
``cursor()``, gives the open ones a moment to close, and otherwise says "not now" instead of
waiting.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.domain.events import ReceivedEvent
from collector.errors import InvalidEvent, StoreError
from collector.niceness import lower_new_native_threads, native_threads
from collector.store import arrow_batch
from collector.store.filter_index import LabelSetCache, delete_expired, write_label_sets
from collector.store.schema import (
    RELATED_ID_KEYS_SQL,
    RELATED_ITEMS_SQL,
    RELATED_PAIR_KEYS_SQL,
    migrate,
)

# The batch form the writer inserts lives in ``arrow_batch`` (importable without DuckDB, for the
# OTLP mapping workers); these names stay importable from here.
columns_to_arrow = arrow_batch.columns_to_arrow
MIN_OCCURRED_US = arrow_batch.MIN_OCCURRED_US
MAX_OCCURRED_US = arrow_batch.MAX_OCCURRED_US

# DuckDB errors that mean "this data cannot be stored" (a bad value in the batch), as opposed to
# an I/O or internal failure that a retry may get past.
DATA_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
)

# DuckDB never checkpoints on its own (see the module docstring); ``checkpoint`` does.
_NO_AUTO_CHECKPOINT = "1000TB"
# How long a checkpoint holds new readers back waiting for the open ones to close before it
# gives up for now: short feed and count reads drain well within it; a long export does not,
# and is not waited for.
CHECKPOINT_DRAIN_SECONDS = 0.5

# The store needs no files but its own, no network and no extensions beyond the built-in ones;
# turning that off for the whole database (and locking the setting) means user SQL cannot
# either — whatever slips past the statement checks in ``store/sql.py``.
_LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


# Dedupe without a primary key: an ART index on ``id`` must live in memory (measured ~60 bytes
# per event: 600 MB at 10M events, and DuckDB cannot evict it), so instead each batch is
# anti-joined against the stored events whose ``occurred`` lies in the batch's range — zone
# maps keep that scan to a few row groups, and a re-sent event (SDK retry, re-exported OTLP
# span) carries the same id *and* occurred. Measured: 127k rows/s vs 70k with the PK.
# The filters' keys (``schema.py`` version 3): the label set's, and the related items' from
# their JSON, parsed once per row in the subquery.
INSERT_SQL = (
    """
INSERT INTO events (id, occurred, received, event, resource_id, resource, related, payload,
                    follows, resource_key, related_id_keys, related_pair_keys)
SELECT {distinct} id::UUID, occurred, received, event, resource_id,
       resource, related, payload, follows::UUID, hash(resource::VARCHAR), """
    + f"{RELATED_ID_KEYS_SQL}, {RELATED_PAIR_KEYS_SQL}"
    + f"""
FROM (SELECT *, {RELATED_ITEMS_SQL} AS items FROM batch)
WHERE id::UUID NOT IN (SELECT id FROM events WHERE occurred BETWEEN {{lo}} AND {{hi}})
"""
)

EVENT_COLUMNS = "id, occurred, received, event, resource, related, payload, follows"


def insert_statement(batch: pa.Table) -> str:
    """``INSERT_SQL`` for an Arrow batch registered as ``batch``, the batch's ``occurred``
    range written into it; ``InvalidEvent`` for a time Python cannot hold.

    The range goes in as literals, not parameters: DuckDB's Python client tries ``import
    pandas`` for every parameter it binds, and without pandas installed each try searches
    ``sys.path`` again — two failed imports per parameter, ~10 % of the writer thread's time
    under load (py-spy, docs/benchmarks.md). The text is Python's own ``isoformat`` of a
    ``datetime``, never the sender's."""
    bounds = pc.min_max(batch.column("occurred"))
    repeated = pc.count_distinct(batch.column("id")).as_py() != batch.num_rows
    try:
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    except (ValueError, OverflowError) as exc:  # beyond what Python's datetime can hold
        raise InvalidEvent(f"an event's occurred time cannot be stored: {exc}") from None
    return (
        INSERT_SQL.replace("{distinct}", "DISTINCT ON (id)" if repeated else "")
        .replace("{lo}", _timestamptz_literal(lo))
        .replace("{hi}", _timestamptz_literal(hi))
    )


def _timestamptz_literal(moment: datetime | None) -> str:
    if moment is None:  # an empty batch
        return "NULL::TIMESTAMPTZ"
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def insert_batch(
    cur: duckdb.DuckDBPyConnection, batch: pa.Table, label_sets: LabelSetCache
) -> tuple[int, list[str]]:
    """Insert an Arrow batch (from ``columns_to_arrow``) into ``events`` and its new label sets
    into ``herald_label_sets``, inside the transaction open on ``cur``; returns the rows
    inserted and the label sets written (for ``label_sets.remember`` once committed). Both
    backends run it. ``InvalidEvent`` for a time Python cannot hold."""
    sql = insert_statement(batch)
    cur.register("batch", batch)
    try:
        row = cur.execute(sql).fetchone()
    finally:
        cur.unregister("batch")
    written = write_label_sets(cur, batch, label_sets)
    return (int(row[0]) if row else 0), written


def rollback(cur: duckdb.DuckDBPyConnection) -> None:
    """Roll back the transaction open on ``cur``, if a failed ``COMMIT`` has not ended it."""
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass


def row_to_event(row: tuple[Any, ...]) -> ReceivedEvent:
    """A row of ``SELECT {EVENT_COLUMNS} FROM events`` as a ``ReceivedEvent``."""
    id_, occurred, received, name, resource, related, payload, follows = row
    return ReceivedEvent(
        id=id_,
        occurred=occurred,
        received=received,
        event=name,
        resource=orjson.loads(resource),
        related=orjson.loads(related),
        payload=orjson.loads(payload),
        follows=follows,
    )


def read_event(cur: duckdb.DuckDBPyConnection, event_id: str) -> ReceivedEvent | None:
    """One stored event by id (any spelling of the UUID), or None; closes ``cur``."""
    try:
        row = cur.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id = TRY_CAST(? AS UUID)", [event_id]
        ).fetchone()
    finally:
        cur.close()
    return row_to_event(row) if row else None


def count_all_events(cur: duckdb.DuckDBPyConnection) -> int:
    """How many events are stored; closes ``cur``."""
    try:
        row = cur.execute("SELECT count(*) FROM events").fetchone()
    finally:
        cur.close()
    return int(row[0]) if row else 0


class _ReaderCursor:
    """A reader's cursor, counted by its store until closed (see ``EventStore.checkpoint``).

    Everything but ``close`` is the DuckDB cursor's own. One dropped without ``close`` stops
    counting when it is collected, so a forgotten one cannot hold checkpoints off for good (the
    DuckDB cursor itself is left to DuckDB then: ``store.cursor().execute(…).fetchall()`` keeps
    working on it after this wrapper is gone)."""

    __slots__ = ("_cur", "_store")

    def __init__(self, cur: duckdb.DuckDBPyConnection, store: EventStore) -> None:
        self._cur: duckdb.DuckDBPyConnection | None = cur
        self._store: EventStore | None = store

    def __getattr__(self, name: str) -> Any:
        if self._cur is None:
            raise duckdb.ConnectionException("Connection already closed!")
        return getattr(self._cur, name)

    def close(self) -> None:
        cur, store = self._cur, self._store
        self._cur = self._store = None
        if cur is not None and store is not None:
            try:
                cur.close()
            finally:
                store._reader_closed()

    def __enter__(self) -> _ReaderCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        store = self._store
        self._cur = self._store = None
        if store is not None:
            store._reader_closed()


class EventStore:
    """A DuckDB file (or ``:memory:``) holding Herald's tables."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        checkpoint_wal_bytes: int = 128 * 1024 * 1024,
        memory_limit: int | None = None,
        spill_limit: int | None = None,
    ) -> None:
        """``memory_limit`` and ``spill_limit`` (bytes; ``None``: DuckDB's defaults) are
        DuckDB's ``memory_limit`` and ``max_temp_directory_size`` for the whole database —
        DuckDB has no per-query ones (``query.sql_memory_limit``, docs/sql.md)."""
        self.path = str(path)
        self.read_only = read_only
        # WAL size at which the writer checkpoints between commits (``checkpoint_due``).
        self.checkpoint_wal_bytes = checkpoint_wal_bytes
        try:
            config: dict[str, Any] = dict(_LOCKED_DOWN)
            if memory_limit is not None:
                config["memory_limit"] = f"{max(1, memory_limit // 1024)}KiB"
                # DuckDB's allocator (jemalloc) keeps freed memory until a task that peaked
                # past this hands it back (default 128 MiB: more than the whole limit here);
                # its background thread purges what stays (server.memory_budget_bytes).
                config["allocator_flush_threshold"] = f"{max(1, memory_limit // 8 // 1024)}KiB"
                config["allocator_background_threads"] = True
            if spill_limit is not None:
                config["max_temp_directory_size"] = f"{spill_limit // 1024}KiB"
            started = native_threads()
            self._conn = duckdb.connect(self.path, read_only=read_only, config=config)
            # DuckDB's worker threads (started by connect) run the parallel part of every
            # query — user SQL's above all: they yield the cores to ingest, the feed and
            # automations when those want them (collector/niceness.py).
            lower_new_native_threads(started)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                # DuckDB names the holder: "Conflicting lock is held in <program> (PID <n>)".
                holder = re.search(r" \(PID \d+\)", str(exc))
                raise StoreError(
                    f"{self.path} is in use by another process{holder.group(0) if holder else ''}"
                    ": a running `herald serve` (use the server instead of --db), or an app "
                    "writing the file in embedded mode (HERALD_DB; wait until it has exited)"
                ) from None
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        # Every statement of the set-up runs on a cursor that is closed at once: a result left
        # unread on the main connection is a query still in flight, and a checkpoint after a
        # delete waits for it forever (the retention wedge of issue 8).
        setup = self._conn.cursor()
        try:
            # Times come back in UTC for every cursor; then nothing may change settings any more.
            setup.execute("SET GLOBAL TimeZone = 'UTC'")
            # DuckDB's own checkpoint (in a commit once the WAL passes a threshold) would wait
            # for every reader in flight and stop the store meanwhile; the writer checkpoints
            # instead, between commits, when no reader is open (``checkpoint``).
            setup.execute(f"SET GLOBAL checkpoint_threshold = '{_NO_AUTO_CHECKPOINT}'")
            setup.execute("SET lock_configuration = true")
            if not read_only:
                migrate(setup)
        finally:
            setup.close()
        self._write_lock = threading.Lock()
        self._closed = False
        self._label_sets = LabelSetCache()
        # Reader cursors open now, and whether a checkpoint is running (readers wait for it).
        self._readers = threading.Condition()
        self._open_readers = 0
        self._checkpointing = False

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reading thread (a DuckDB connection is not thread-safe).

        Close it when done (``close()`` or ``with``): while any reader cursor is open the store
        does not checkpoint. Waits while a checkpoint runs (DuckDB would make its first
        statement wait anyway)."""
        with self._readers:
            while self._checkpointing:
                self._readers.wait()
            cur = self._conn.cursor()
            self._open_readers += 1
        # Typed as the DuckDB cursor it forwards to: callers use it as one.
        return cast(duckdb.DuckDBPyConnection, _ReaderCursor(cur, self))

    def _reader_closed(self) -> None:
        with self._readers:
            self._open_readers -= 1
            self._readers.notify_all()

    @property
    def open_readers(self) -> int:
        """Reader cursors handed out by ``cursor()`` and not closed yet."""
        return self._open_readers

    def append(self, batch: pa.Table) -> int:
        """Insert an Arrow batch from ``columns_to_arrow`` and commit; returns rows inserted.

        Duplicate ids (already stored, or repeated inside the batch) are skipped. Raises
        ``InvalidEvent`` when DuckDB refuses a value of the batch (nothing of it is stored) and
        ``StoreError`` when the store fails."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN")
                try:
                    inserted, written = insert_batch(cur, batch, self._label_sets)
                    cur.execute("COMMIT")
                except BaseException:
                    rollback(cur)
                    raise
            except DATA_ERRORS as exc:
                raise InvalidEvent(f"the store refused a value of this batch: {exc}") from exc
            except duckdb.Error as exc:
                raise StoreError(f"insert failed: {exc}") from exc
            finally:
                cur.close()
            self._label_sets.remember(written)
        return inserted

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one transaction that holds the write lock, for writes other than
        event batches (automations, their firings and state): committed when the block ends,
        rolled back if it raises. DuckDB errors surface as ``StoreError``."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                raise StoreError(f"write failed: {exc}") from exc
            finally:
                cur.close()

    def wal_bytes(self) -> int:
        """Size of the write-ahead log (0 when there is none)."""
        try:
            return Path(self.path + ".wal").stat().st_size
        except OSError:
            return 0

    def checkpoint(self, drain_seconds: float = CHECKPOINT_DRAIN_SECONDS) -> bool:
        """Fold the WAL into the file (and drop deleted rows) once no reader cursor is open.

        New readers wait at ``cursor()`` from now on; the open ones get ``drain_seconds`` to
        close. If one is still open then, the checkpoint is skipped (False) — it would wait for
        that reader with the whole store stopped (module docstring) — and readers go on."""
        with self._write_lock:
            if self._closed:
                return False
            with self._readers:
                self._checkpointing = True
                drained = self._readers.wait_for(
                    lambda: self._open_readers == 0, timeout=drain_seconds
                )
                if not drained:
                    self._checkpointing = False
                    self._readers.notify_all()
                    return False
            try:
                self._conn.execute("CHECKPOINT")
            except duckdb.Error as exc:
                raise StoreError(f"checkpoint failed: {exc}") from exc
            finally:
                with self._readers:
                    self._checkpointing = False
                    self._readers.notify_all()
        return True

    def checkpoint_if_wal_over(self, wal_bytes: int) -> bool:
        """``checkpoint`` if the WAL is at least ``wal_bytes``."""
        if self.wal_bytes() < wal_bytes:
            return False
        return self.checkpoint()

    def get_event(self, event_id: str) -> ReceivedEvent | None:
        return read_event(self.cursor(), event_id)

    def count_events(self) -> int:
        return count_all_events(self.cursor())

    def delete_expired(
        self, default_cutoff: datetime, overrides: Mapping[str, datetime], max_rows: int
    ) -> int:
        """Retention, one bounded slice: delete at most ``max_rows`` events older than their
        cutoff (``overrides`` per event name, ``default_cutoff`` for the rest) in one short
        autocommitted statement; returns how many went. Call again until it returns fewer
        than ``max_rows``. Space comes back at the next ``checkpoint``."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN")
                try:
                    deleted = delete_expired(cur, default_cutoff, overrides, max_rows)
                    cur.execute("COMMIT")
                except BaseException:
                    rollback(cur)
                    raise
            except duckdb.Error as exc:
                raise StoreError(f"retention failed: {exc}") from exc
            finally:
                cur.close()
        return deleted

    def close(self) -> None:
        """Close the file; waits for a write in progress (e.g. a retention slice) first."""
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
