"""``LakeStore``: Herald's events in a DuckLake shared by several collectors — the lake
backend's ``EventLog`` (``collector/domain/event_store.py``), and what ``store/writer.py``
commits into and ``store/reader.py`` reads from.

One in-memory DuckDB per process with the lake attached as ``lake`` and made the default
catalog of every cursor, so the DuckDB backend's SQL (``feed_pages.py``, ``feed_counts.py``,
``filter_sql.py``, ``sql.py``, the ``INSERT``) runs unchanged. The catalog (``postgres:``,
``sqlite:`` or ``duckdb:``) holds the snapshots and the file list; the Parquet files go under
``data_path``.

Committing across collectors. DuckLake settles concurrent commits itself (a lost race on the
next snapshot id is retried against the new snapshot when the changes do not conflict), but it
has no unique keys: two collectors that insert the same event id at the same time would both
succeed, each having checked for it in a snapshot that did not yet hold the other's. So every
commit of events holds the *commit lock* — a PostgreSQL advisory lock (``postgres:``
catalogs), an exclusive file lock beside the catalog (``sqlite:``), the process's own lock
(``duckdb:``, which one process opens at a time) — from before its transaction starts until
after it commits: its dedupe anti-join (``duckdb_store.INSERT_SQL``) then sees every commit
before it. The lock is a transaction-level advisory lock on a connection of its own, so a
collector that dies (SIGKILL) releases it with its connection. What the lock serialises is the
insert itself (writing one Parquet file and the catalog rows); parsing, validation and Arrow
building run outside it, in parallel on every collector.

Lock-down, as the DuckDB file's: the extensions are loaded from their wheels
(``extensions.py``), the catalog and the data path are attached, then external access is
turned off and the configuration locked — user SQL reaches neither files (the data path
included: ``store/sql_sandbox.py`` refuses every file reader by name) nor the network, and
cannot ATTACH. The catalog's own tables (``__ducklake_metadata_lake``) and the lock's
connection (``__herald_pg``) are refused by the sandbox's rule for internal catalogs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from collector.domain.columns import EventColumns
from collector.domain.events import ReceivedEvent
from collector.errors import InvalidEvent, StoreError
from collector.niceness import lower_new_native_threads, native_threads
from collector.store.duckdb_store import (
    DATA_ERRORS,
    count_all_events,
    insert_batch,
    read_event,
)
from collector.store.filter_index import LabelSetCache, delete_expired
from collector.store.lake import extensions
from collector.store.lake.lake_schema import migrate_lake

log = logging.getLogger(__name__)

# The lake's name in every cursor (``USE lake``) and the catalog DuckLake keeps its tables in.
LAKE = "lake"
# The catalog's PostgreSQL database attached a second time, for the commit lock only.
_LOCK_DB = "__herald_pg"
# pg_advisory_xact_lock's key for "committing events" (ASCII "HrldEvts"): one lock per catalog
# database, whoever else uses advisory locks there picks other keys.
COMMIT_LOCK_KEY = 0x48726C6445767473
# A commit that fails (a conflict DuckLake could not settle, the catalog briefly away) is
# tried again this many times, waiting 50 ms, 100 ms, … in between.
COMMIT_ATTEMPTS = 6
_RETRY_WAIT_SECONDS = 0.05
# Opening a lake that other collectors are creating at the same moment (``_attach_lake``).
_ATTACH_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class LakeLocation:
    """Where a lake lives: its catalog (``kind`` postgres|sqlite|duckdb and the connection
    string or path after the colon) and the directory of its Parquet files."""

    kind: str
    target: str
    data_path: str

    @classmethod
    def parse(cls, catalog: str, data_path: str) -> LakeLocation:
        """``storage.catalog`` and ``storage.data_path`` (validated by the config)."""
        kind, _, target = catalog.partition(":")
        if kind not in ("postgres", "sqlite", "duckdb") or not target.strip():
            raise StoreError(
                f"storage.catalog {catalog!r}: expected 'postgres:<connection string>', "
                "'sqlite:PATH' or 'duckdb:PATH'"
            )
        if "://" in data_path:
            raise StoreError(
                f"storage.data_path {data_path!r}: this Herald writes the lake to a filesystem "
                "path (a shared mount); object stores need DuckDB's httpfs (docs/scale-out.md)"
            )
        if kind != "postgres":
            target = str(Path(target).expanduser().resolve())
        path = str(Path(data_path).expanduser().resolve())
        return cls(kind, target, path.rstrip("/") + "/")

    @property
    def attach_target(self) -> str:
        """What ``ATTACH 'ducklake:…'`` takes."""
        if self.kind == "duckdb":
            return f"ducklake:{self.target}"
        return f"ducklake:{self.kind}:{self.target}"

    def describe(self) -> str:
        """For messages: the catalog without what a connection string may hold in secret."""
        if self.kind == "postgres":
            keys = dict(part.split("=", 1) for part in self.target.split() if "=" in part)
            shown = " ".join(
                f"{k}={keys[k]}" for k in ("dbname", "host", "port", "user") if k in keys
            )
            return f"postgres:{shown}"
        return f"{self.kind}:{self.target}"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LakeStore:
    """The events of a DuckLake, for one collector process."""

    def __init__(
        self,
        location: LakeLocation,
        *,
        memory_limit: int | None = None,
        spill_limit: int | None = None,
        writer_id: str | None = None,
    ) -> None:
        """Attach the lake (creating it and Herald's tables if the catalog is empty).

        ``writer_id`` names this collector's commits in the lake's snapshots (a fresh id per
        process by default): ``SnapshotFollower`` tells its own commits from the others'."""
        self.location = location
        self.path = location.describe()
        self.writer_id = writer_id or f"herald-{uuid.uuid4()}"
        # The writer's interface (store/writer.py): a lake has no WAL to fold.
        self.checkpoint_wal_bytes = 0
        self._write_lock = threading.Lock()
        self._closed = False
        self._label_sets = LabelSetCache()
        self._lock_file: int | None = None
        self._temp = tempfile.TemporaryDirectory(prefix="herald-lake-")
        config: dict[str, Any] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "temp_directory": self._temp.name,
        }
        if memory_limit is not None:
            config["memory_limit"] = f"{max(1, memory_limit // 1024)}KiB"
        if spill_limit is not None:
            config["max_temp_directory_size"] = f"{spill_limit // 1024}KiB"
        try:
            started = native_threads()
            self._conn = duckdb.connect(":memory:", config=config)
            lower_new_native_threads(started)
        except duckdb.Error as exc:
            self._temp.cleanup()
            raise StoreError(f"cannot start DuckDB for the lake: {exc}") from None
        try:
            self._open()
        except BaseException:
            self._conn.close()
            self._close_lock_file()
            self._temp.cleanup()
            raise

    def _open(self) -> None:
        loc = self.location
        setup = self._conn.cursor()
        try:
            setup.execute("SET GLOBAL TimeZone = 'UTC'")
            extensions.load(setup, "ducklake")
            if loc.kind == "postgres":
                extensions.load(setup, "postgres_scanner")
            elif loc.kind == "sqlite":
                extensions.load(setup, "sqlite_scanner")
            Path(loc.data_path).mkdir(parents=True, exist_ok=True)
            # Once external access is off, DuckDB reaches only these: the Parquet files and,
            # for a catalog in a file, that file and its journals.
            setup.execute(f"SET allowed_directories = [{_quoted(loc.data_path)}]")
            if loc.kind != "postgres":
                catalog_files = [loc.target + suffix for suffix in ("", ".wal", "-wal", "-journal")]
                setup.execute(
                    f"SET allowed_paths = [{', '.join(_quoted(p) for p in catalog_files)}]"
                )
                self._lock_file = os.open(loc.target + ".herald-lock", os.O_RDWR | os.O_CREAT)
            try:
                self._attach_lake(setup)
                if loc.kind == "postgres":
                    setup.execute(f"ATTACH {_quoted(loc.target)} AS {_LOCK_DB} (TYPE postgres)")
            except duckdb.Error as exc:
                raise StoreError(
                    f"cannot open the lake at {self.path}: {self._reason(exc)}"
                ) from None
            setup.execute("SET enable_external_access = false")
            # DuckLake's own retry of a commit that lost the race for the next snapshot.
            setup.execute("SET GLOBAL ducklake_max_retry_count = 100")
            setup.execute("SET lock_configuration = true")
            setup.execute(f"USE {LAKE}")
            try:
                with self._commit_lock():
                    migrate_lake(setup, LAKE)
            except duckdb.Error as exc:
                raise StoreError(
                    f"cannot create Herald's tables in the lake at {self.path}: {self._reason(exc)}"
                ) from None
        finally:
            setup.close()
        self._events_table_id = self._table_id("events")

    def _attach_lake(self, setup: duckdb.DuckDBPyConnection) -> None:
        """ATTACH the lake. Collectors started at once on an empty catalog all try to create
        DuckLake's tables; PostgreSQL lets one do it and fails the others on its catalog's
        unique index ("duplicate key value … pg_type_typname_nsp_index"): those try again
        and find the tables made."""
        loc = self.location
        sql = f"ATTACH {_quoted(loc.attach_target)} AS {LAKE} (DATA_PATH {_quoted(loc.data_path)})"
        for attempt in range(_ATTACH_ATTEMPTS):
            try:
                setup.execute(sql)
                return
            except duckdb.Error as exc:
                racing = "duplicate key" in str(exc) or "already exists" in str(exc)
                if not racing or attempt + 1 == _ATTACH_ATTEMPTS:
                    raise
                time.sleep(_RETRY_WAIT_SECONDS * (attempt + 1))

    def _table_id(self, name: str) -> int:
        cur = self.cursor()
        try:
            row = cur.execute(
                f"SELECT table_id FROM ducklake_table_info({_quoted(LAKE)}) WHERE table_name = ?",
                [name],
            ).fetchone()
        finally:
            cur.close()
        if row is None:
            raise StoreError(f"the lake at {self.path} has no {name} table")
        return int(row[0])

    # ------------------------------------------------------------------ cursors and locks

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one thread whose default catalog is the lake; close it when done."""
        cur = self._conn.cursor()
        try:
            cur.execute(f"USE {LAKE}")
        except duckdb.Error as exc:
            cur.close()
            raise StoreError(f"the lake is not available: {self._reason(exc)}") from None
        return cur

    @contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """Hold the lake-wide commit lock (module docstring) for the block."""
        if self.location.kind == "postgres":
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN")
                # A transaction-level lock on the lock connection's own transaction: released
                # by the ROLLBACK below, or by PostgreSQL when this process's connection dies.
                cur.execute(
                    f"SELECT * FROM postgres_query({_quoted(_LOCK_DB)}, "
                    f"'SELECT pg_advisory_xact_lock({COMMIT_LOCK_KEY}) IS NULL')"
                ).fetchall()
                yield
            finally:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error as exc:
                    # The lock connection died (the catalog restarted): PostgreSQL ended its
                    # transaction and freed the lock with it. Raising would fail — and retry
                    # — a block whose commit has already happened.
                    log.warning("commit lock released with its connection (%s)", self._reason(exc))
                finally:
                    cur.close()
        elif self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        else:
            yield

    # ------------------------------------------------------------------ writes

    def append(self, batch: pa.Table) -> int:
        """Insert an Arrow batch from ``columns_to_arrow`` in one lake commit (under the commit
        lock) and return how many rows were new — an id already in the lake, from any
        collector, is skipped. A failed attempt — a commit conflict, or the catalog's
        connection dropped (PostgreSQL restarted: the next attempt reconnects), whether at the
        lock, the cursor or the commit — is retried (``COMMIT_ATTEMPTS``, ~1.5 s in all); the
        answer comes only once DuckLake has committed. ``InvalidEvent`` when DuckDB refuses a
        value, ``StoreError`` naming the catalog when every attempt failed."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    return self._insert(batch)
                except DATA_ERRORS as exc:
                    raise InvalidEvent(f"the store refused a value of this batch: {exc}") from exc
                except (duckdb.Error, StoreError) as exc:
                    reason = self._reason(exc)
                    if attempt + 1 == COMMIT_ATTEMPTS:
                        raise StoreError(
                            f"lake commit failed after {COMMIT_ATTEMPTS} attempts "
                            f"(catalog {self.path}): {reason}"
                        ) from None
                    log.warning("lake commit failed (%s); retrying", reason)
                    time.sleep(_RETRY_WAIT_SECONDS * 2**attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _reason(self, exc: BaseException) -> str:
        """The first line of a failure, without the catalog's connection string (DuckDB's
        postgres errors quote it, and it may hold a password)."""
        reason = _first_line(exc)
        if self.location.kind == "postgres":
            reason = reason.replace(self.location.target, self.path)
        return reason

    def _insert(self, batch: pa.Table) -> int:
        with self._commit_lock():
            cur = self.cursor()
            try:
                cur.execute("BEGIN")
                try:
                    # The snapshot names its collector: followers skip their own commits.
                    cur.execute(f"CALL {LAKE}.set_commit_message(?, 'ingest')", [self.writer_id])
                    inserted, written = insert_batch(cur, batch, self._label_sets)
                    cur.execute("COMMIT")
                except BaseException:
                    _rollback(cur)
                    raise
            finally:
                cur.close()
        self._label_sets.remember(written)
        return inserted

    def delete_expired(
        self, default_cutoff: datetime, overrides: Mapping[str, datetime], max_rows: int
    ) -> int:
        """Retention, one bounded slice (``filter_index.delete_expired``): DuckLake writes
        a delete file; the rows' space comes back when upkeep rewrites or expires the files
        (``upkeep.py``). A slice that conflicts with another collector's (or a compaction) is
        retried."""
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    cur = self.cursor()  # fails too when the catalog's connection dropped
                    try:
                        cur.execute("BEGIN")
                        try:
                            deleted = delete_expired(cur, default_cutoff, overrides, max_rows)
                            cur.execute("COMMIT")
                        except BaseException:
                            _rollback(cur)
                            raise
                    finally:
                        cur.close()
                    return deleted
                except (duckdb.Error, StoreError) as exc:
                    if attempt + 1 == COMMIT_ATTEMPTS:
                        raise StoreError(f"retention failed: {self._reason(exc)}") from None
                    time.sleep(_RETRY_WAIT_SECONDS * 2**attempt)
        raise AssertionError("unreachable")

    def wal_bytes(self) -> int:
        """The writer's interface: a lake has no write-ahead log."""
        return 0

    def checkpoint(self) -> bool:
        """Nothing to fold (each commit is its own Parquet file and catalog rows); the lake's
        files are merged and expired by its upkeep (``upkeep.py``)."""
        return True

    # ------------------------------------------------------------------ reads

    def get_event(self, event_id: str) -> ReceivedEvent | None:
        return read_event(self.cursor(), event_id)

    def count_events(self) -> int:
        return count_all_events(self.cursor())

    # ------------------------------------------------------------------ snapshots

    def current_snapshot(self) -> int:
        """The lake's newest snapshot id (every commit of any collector makes one)."""
        cur = self.cursor()
        try:
            row = cur.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0

    def inserts_by_others(self, after: int, upto: int) -> list[tuple[EventColumns, list[int]]]:
        """The events other collectors committed in snapshots ``after`` < id <= ``upto``, one
        batch per snapshot in snapshot (commit) order, with their ``received`` stamps in µs —
        what the live tail and the automations learn of other collectors' commits."""
        if upto <= after:
            return []
        cur = self.cursor()
        try:
            wanted, plain, last = self._snapshots_after(cur, after, upto)
            if not wanted:
                return []
            columns = (
                "snapshot_id, id::VARCHAR, epoch_us(occurred), epoch_us(received), event, "
                "resource_id, resource::VARCHAR, related::VARCHAR, payload::VARCHAR, "
                "follows::VARCHAR"
            )
            rows: list[Any] | None = None
            if plain:
                # Only commits since: DuckLake's change feed reads just the new files.
                rows = cur.execute(
                    f"SELECT {columns} FROM ducklake_table_changes(?, 'main', 'events', ?, ?) "
                    "WHERE change_type = 'insert' AND list_contains(?, snapshot_id) "
                    "ORDER BY snapshot_id, rowid",
                    [LAKE, wanted[0], wanted[-1], wanted],
                ).fetchall()
                # A compaction committed while the feed was read may have hidden rows from it
                # (one small query tells whether anything was committed meanwhile).
                newest = cur.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
                if (
                    newest
                    and int(newest[0]) > last
                    and not self._snapshots_after(cur, last, last)[1]
                ):
                    rows = None
            if rows is None:
                # A compaction since ``after``: the change feed (``ducklake_table_changes``,
                # ``ducklake_table_insertions``) finds a merged file's rows only when the
                # range asked for starts at or before the file's first snapshot (DuckLake of
                # DuckDB 1.4.4) — a follower behind a compaction got nothing. Each row's
                # ``snapshot_id`` is kept by merging and rewriting: read the rows by it (a
                # scan of every file's snapshot ids, docs/benchmarks.md).
                rows = cur.execute(
                    f"SELECT {columns} FROM events WHERE snapshot_id >= ? AND snapshot_id <= ? "
                    "AND list_contains(?, snapshot_id) ORDER BY snapshot_id, rowid",
                    [wanted[0], wanted[-1], wanted],
                ).fetchall()
        finally:
            cur.close()
        batches: list[tuple[EventColumns, list[int]]] = []
        current: int | None = None
        for snap, id_, occurred, received, name, rid, resource, related, payload, follows in rows:
            if snap != current:
                batches.append((EventColumns(), []))
                current = snap
            cols, stamps = batches[-1]
            cols.append_json(id_, occurred, name, rid, resource, related, payload, follows)
            stamps.append(received)
        return batches

    def _snapshots_after(
        self, cur: duckdb.DuckDBPyConnection, after: int, upto: int
    ) -> tuple[list[int], bool, int]:
        """The snapshots after ``after``: those up to ``upto`` in which other collectors
        inserted events; whether every one since ``after`` (up to the newest) only inserted
        or deleted rows — no compaction (which commits a snapshot of no such change), no
        schema change; and the newest snapshot id."""
        rows = cur.execute(
            "SELECT snapshot_id, author IS DISTINCT FROM ? "
            "AND list_contains(changes['tables_inserted_into'], ?), "
            "len(map_keys(changes)) > 0 AND list_has_all(['tables_inserted_into', "
            "'tables_deleted_from'], map_keys(changes)) "
            f"FROM ducklake_snapshots({_quoted(LAKE)}) WHERE snapshot_id > ? ORDER BY snapshot_id",
            [self.writer_id, str(self._events_table_id), after],
        ).fetchall()
        wanted = [int(snap) for snap, theirs, _ in rows if theirs and snap <= upto]
        plain = all(bool(moved_nothing) for _, _, moved_nothing in rows)
        return wanted, plain, int(rows[-1][0]) if rows else after

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Detach the lake; waits for a commit in progress."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            self._close_lock_file()
            self._temp.cleanup()

    def _close_lock_file(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed COMMIT already ended the transaction


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]
