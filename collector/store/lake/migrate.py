"""Moving a single-file store's events into a lake (``herald store migrate --to-ducklake``).

The DuckDB file is opened read-only (stop ``herald serve`` on it first: DuckDB lets one process
open a file it writes) and its events are read in ``occurred`` order, ``CHUNK_ROWS`` at a time,
and appended to the lake through ``LakeStore.append`` — the path every collector's commits
take: the commit lock, the dedupe anti-join, one Parquet file per chunk. So a migration that
stops half-way (killed, the catalog away) is simply run again: what is already in the lake is
skipped, the rest is copied; and it can run while collectors already write to the lake. In
``occurred`` order, each chunk's file covers one stretch of time, which is what the feed's time
windows prune by.

The automations (``automations`` and their history) are not events: they stay in the file;
docs/scale-out.md says how to carry them over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from collector.errors import StoreError
from collector.store.duckdb_store import EventStore
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.store.reader import check_herald_store

# Events per lake commit (one Parquet file each); upkeep merges them later anyway.
CHUNK_ROWS = 250_000

# The lake's INSERT reads the same columns the writer's Arrow batches have.
_SELECT = (
    "SELECT id::VARCHAR AS id, occurred, received, event, resource_id, resource, related, "
    "payload, follows::VARCHAR AS follows FROM events ORDER BY occurred, id"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """What a migration did: events read from the file, new in the lake, already there."""

    read: int
    copied: int

    @property
    def skipped(self) -> int:
        return self.read - self.copied


def migrate_to_lake(
    db_path: str | Path,
    location: LakeLocation,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> Migration:
    """Copy every event of the Herald store at ``db_path`` into the lake at ``location``
    (created if the catalog is empty); ``progress(read, total)`` after each chunk."""
    if not Path(db_path).is_file():
        raise StoreError(f"{db_path}: no such file")
    source = EventStore(db_path, read_only=True)
    try:
        check_herald_store(source)
        lake = LakeStore(location)
        try:
            return _copy(source, lake, chunk_rows, progress)
        finally:
            lake.close()
    finally:
        source.close()


def _copy(
    source: EventStore,
    lake: LakeStore,
    chunk_rows: int,
    progress: Callable[[int, int], None] | None,
) -> Migration:
    cur = source.cursor()
    try:
        row = cur.execute("SELECT count(*) FROM events").fetchone()
        total = int(row[0]) if row else 0
        cur.execute(_SELECT)
        batches = cur.fetch_record_batch(rows_per_batch=chunk_rows)
        read = copied = 0
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= chunk_rows:
                copied += lake.append(pa.Table.from_batches(pending))
                read += pending_rows
                pending, pending_rows = [], 0
                if progress is not None:
                    progress(read, total)
        if pending:
            copied += lake.append(pa.Table.from_batches(pending))
            read += pending_rows
            if progress is not None:
                progress(read, total)
    finally:
        cur.close()
    return Migration(read=read, copied=copied)
