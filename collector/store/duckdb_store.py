"""``EventStore``: the only code that talks to DuckDB.

One read-write connection per process (DuckDB allows one writing process per file). Writes come
only from the ``BatchWriter`` thread; reads use their own cursors. Inserts go through Arrow
(``INSERT … SELECT FROM arrow``), never row by row; a re-sent event is a no-op (dedupe, see
``_INSERT``). Labels and payloads travel as Arrow's canonical JSON extension
type, which DuckDB takes as ``JSON`` without re-parsing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.domain.columns import EventColumns
from collector.domain.events import ReceivedEvent
from collector.errors import StoreError
from collector.store.schema import migrate

_TS = pa.timestamp("us", tz="UTC")

# The store needs no files but its own, no network and no extensions beyond the built-in ones;
# turning that off for the whole database (and locking the setting) means user SQL cannot
# either — whatever slips past the statement checks in ``store/sql.py``.
_LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_JSON = pa.json_(pa.string())


def _json_array(texts: list[str]) -> pa.ExtensionArray:
    # Arrow's canonical JSON extension type lands in DuckDB as JSON without a re-parse.
    return pa.ExtensionArray.from_storage(_JSON, pa.array(texts, pa.string()))


def columns_to_arrow(cols: EventColumns, received_us: list[int]) -> pa.Table:
    """Build the Arrow table for ``cols`` without per-event Python objects."""
    return pa.Table.from_arrays(
        [
            pa.array(cols.ids, pa.string()),
            pa.array(cols.occurred_us, _TS),
            pa.array(received_us, _TS),
            pa.array(cols.names, pa.string()),
            pa.array(cols.resource_ids, pa.string()),
            _json_array(cols.resources),
            _json_array(cols.related),
            _json_array(cols.payloads),
            pa.array(cols.follows, pa.string()),
        ],
        names=[
            "id", "occurred", "received", "event", "resource_id",
            "resource", "related", "payload", "follows",
        ],
    )


# Dedupe without a primary key: an ART index on ``id`` must live in memory (measured ~60 bytes
# per event: 600 MB at 10M events, and DuckDB cannot evict it), so instead each batch is
# anti-joined against the stored events whose ``occurred`` lies in the batch's range — zone
# maps keep that scan to a few row groups, and a re-sent event (SDK retry, re-exported OTLP
# span) carries the same id *and* occurred. Measured: 127k rows/s vs 70k with the PK.
_INSERT = """
INSERT INTO events
SELECT {distinct} id::UUID, occurred, received, event, resource_id,
       resource, related, payload, follows::UUID
FROM batch
WHERE id::UUID NOT IN (SELECT id FROM events WHERE occurred BETWEEN $lo AND $hi)
"""

_EVENT_COLUMNS = "id, occurred, received, event, resource, related, payload, follows"


def row_to_event(row: tuple[Any, ...]) -> ReceivedEvent:
    """A row of ``SELECT {_EVENT_COLUMNS} FROM events`` as a ``ReceivedEvent``."""
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


class EventStore:
    """A DuckDB file (or ``:memory:``) holding Herald's tables."""

    def __init__(
        self, path: str | Path, *, read_only: bool = False,
        checkpoint_wal_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        try:
            self._conn = duckdb.connect(self.path, read_only=read_only, config=_LOCKED_DOWN)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreError(
                    f"{self.path} is in use by another process (is `herald serve` running? "
                    "use the server instead of --db)"
                ) from None
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        # Times come back in UTC for every cursor; then nothing may change settings any more.
        self._conn.execute("SET GLOBAL TimeZone = 'UTC'")
        # DuckDB's default (16 MB of WAL) checkpoints inside a commit every ~12k events and
        # stalls that commit for ~0.5 s; measured, it cut the insert rate to less than half.
        # The writer checkpoints when ingest is idle instead (``checkpoint_if_idle``).
        self._conn.execute(f"SET checkpoint_threshold = '{int(checkpoint_wal_bytes)}B'")
        self._conn.execute("SET lock_configuration = true")
        if not read_only:
            migrate(self._conn)
        self._write_lock = threading.Lock()
        self._closed = False

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reading thread (a DuckDB connection is not thread-safe)."""
        return self._conn.cursor()

    def append(self, batch: pa.Table) -> int:
        """Insert an Arrow batch from ``columns_to_arrow`` and commit; returns rows inserted.

        Duplicate ids (already stored, or repeated inside the batch) are skipped.
        """
        bounds = pc.min_max(batch.column("occurred"))
        repeated = pc.count_distinct(batch.column("id")).as_py() != batch.num_rows
        sql = _INSERT.format(distinct="DISTINCT ON (id)" if repeated else "")
        with self._write_lock:
            cur = self._conn.cursor()
            try:
                cur.register("batch", batch)
                row = cur.execute(
                    sql, {"lo": bounds["min"].as_py(), "hi": bounds["max"].as_py()}
                ).fetchone()
            except duckdb.Error as exc:
                raise StoreError(f"insert failed: {exc}") from exc
            finally:
                cur.close()
        return int(row[0]) if row else 0

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

    def checkpoint_if_wal_over(self, wal_bytes: int) -> bool:
        """Checkpoint (fold the WAL into the file) if the WAL is at least ``wal_bytes``."""
        try:
            size = Path(self.path + ".wal").stat().st_size
        except OSError:
            return False
        if size < wal_bytes:
            return False
        with self._write_lock:
            if self._closed:
                return False
            self._conn.execute("CHECKPOINT")
        return True

    def get_event(self, event_id: str) -> ReceivedEvent | None:
        cur = self.cursor()
        try:
            row = cur.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = TRY_CAST(? AS UUID)", [event_id]
            ).fetchone()
        finally:
            cur.close()
        return row_to_event(row) if row else None

    def count_events(self) -> int:
        cur = self.cursor()
        try:
            row = cur.execute("SELECT count(*) FROM events").fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0

    def delete_older_than(self, default_cutoff: datetime, overrides: dict[str, datetime]) -> int:
        """Retention: delete events older than their cutoff (per event name), then checkpoint."""
        with self._write_lock:
            cur = self._conn.cursor()
            try:
                names = list(overrides)
                deleted = 0
                for name, cutoff in overrides.items():
                    row = cur.execute(
                        "DELETE FROM events WHERE event = ? AND occurred < ?", [name, cutoff]
                    ).fetchone()
                    deleted += int(row[0]) if row else 0
                if names:
                    row = cur.execute(
                        "DELETE FROM events WHERE occurred < ? AND NOT list_contains(?, event)",
                        [default_cutoff, names],
                    ).fetchone()
                else:
                    row = cur.execute(
                        "DELETE FROM events WHERE occurred < ?", [default_cutoff]
                    ).fetchone()
                deleted += int(row[0]) if row else 0
                if deleted:
                    # Reclaim space: a checkpoint rewrites row groups without the deleted rows.
                    cur.execute("CHECKPOINT")
                return deleted
            except duckdb.Error as exc:
                raise StoreError(f"retention failed: {exc}") from exc
            finally:
                cur.close()

    def close(self) -> None:
        """Close the file; waits for a write in progress (e.g. retention) to finish first."""
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
