"""Embedded mode of the exporter plugin (``HERALD_DB=path``): spans and log records mapped by
Herald's OTLP mapping (``collector/mapping/``) and committed straight into a local store file by
the store's ``BatchWriter`` — what ``herald serve`` does with an OTLP export, without a server.

An export returns once its events are committed (acknowledged means committed, as everywhere in
Herald). DuckDB lets one process write a file, so a process holds its store from the first
exporter until the last one shuts down: the traces and logs exporters of one process share one
``EmbeddedStore`` (``open_store`` / ``EmbeddedStore.release``), and a file already held by
another process (a running ``herald serve``, another app) is a ``StoreError`` saying what to do.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.clock import now_us
from collector.config import LimitsConfig, StorageConfig
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.errors import Busy, StoreError
from collector.mapping.otlp_common import MappingResult
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter

# The least an export waits for its queued batch's commit (see ``_submit``).
COMMIT_WAIT_SECONDS = 30.0


def _limits() -> Limits:
    """The server's default limits: the file holds what ``herald serve`` would have stored."""
    c = LimitsConfig()
    return Limits(
        max_labels_per_resource=c.max_labels_per_resource,
        max_related_resources=c.max_related_resources,
        max_event_name_length=c.max_event_name_length,
        max_event_bytes=c.max_event_bytes,
        max_future_seconds=c.max_future_seconds,
    )


class EmbeddedStore:
    """One store file opened for writing, its writer thread, and how many exporters use it."""

    def __init__(self, path: str) -> None:
        storage = StorageConfig()
        try:
            self._store = EventStore(path, checkpoint_wal_bytes=storage.checkpoint_wal_bytes)
        except StoreError as exc:
            if "in use by another process" in str(exc):
                holder = re.search(r" \(PID \d+\)", str(exc))
                raise StoreError(
                    f"HERALD_DB={path}: the file is in use by another process"
                    f"{holder.group(0) if holder else ''}: a running `herald serve` on it, or "
                    "another app in embedded mode. DuckDB lets one process write a file: send "
                    "to that server instead (unset HERALD_DB, set "
                    "HERALD_ADDRESS to its gRPC host:port), or give this app a file of its own"
                ) from None
            raise
        self.path = path
        self.limits = _limits()
        self._writer = BatchWriter(
            self._store,
            batch_max_events=storage.batch_max_events,
            queue_max_events=storage.queue_max_events,
            queue_max_bytes=storage.queue_max_bytes,
        )
        self._writer.start()
        self.users = 1

    def traces(self, request: ExportTraceServiceRequest, timeout: float) -> str | None:
        """Map and commit spans; returns what was rejected or noted (None: everything stored)."""
        return self._commit(traces_to_events(request, now_us(), self.limits), timeout)

    def logs(self, request: ExportLogsServiceRequest, timeout: float) -> str | None:
        """Map and commit log records, as ``traces``."""
        return self._commit(logs_to_events(request, now_us(), self.limits), timeout)

    def _commit(self, result: MappingResult, timeout: float) -> str | None:
        self._submit(result.columns, timeout)
        if result.rejected or result.problems:
            return result.error_message()
        return None

    def _submit(self, columns: EventColumns, timeout: float) -> None:
        """Commit ``columns``; a full queue (exporters of many threads at once) is waited out
        within ``timeout``, as a remote export retries the server's busy answer."""
        deadline = time.monotonic() + timeout
        wait = 0.01
        done: Future[int] | None = None
        while done is None:
            try:
                done = self._writer.submit_nowait(columns)
            except Busy:
                if time.monotonic() + wait >= deadline:
                    raise
                time.sleep(wait)
                wait = min(wait * 2, 0.5)
        # Committed when this returns; the writer's error (StoreError, InvalidEvent) otherwise.
        # A queued batch gets committed, so the wait is generous (leaving early reports a
        # failure for data that gets stored) but bounded: an export that never returns would
        # hang the app's exit, where the SDK flushes.
        try:
            done.result(timeout=max(COMMIT_WAIT_SECONDS, 3 * timeout))
        except TimeoutError:
            raise StoreError(
                f"the commit into {self.path} did not finish in time; it may still complete"
            ) from None

    def close(self) -> None:
        """Commit what is queued, stop the writer thread, close the file."""
        self._writer.stop()
        self._store.close()


class OpenStores:
    """The stores this process has open, by resolved path, counted by user.

    Process-wide on purpose: the SDK builds the traces exporter and the logs exporter on its
    own, each without arguments, and both must write through the one connection DuckDB allows
    this process on the file (a second ``connect`` with settings locked fails)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, EmbeddedStore] = {}

    def acquire(self, path: str | Path) -> EmbeddedStore:
        key = str(Path(path).expanduser().resolve())
        with self._lock:
            store = self._open.get(key)
            if store is not None:
                store.users += 1
                return store
            store = EmbeddedStore(key)
            self._open[key] = store
            return store

    def release(self, store: EmbeddedStore) -> None:
        """One user fewer; the last one commits what is queued and closes the file."""
        with self._lock:
            store.users -= 1
            if store.users > 0:
                return
            self._open.pop(store.path, None)
        store.close()


_stores = OpenStores()


def open_store(path: str | Path) -> EmbeddedStore:
    """The process's store on ``path``, opened on first use; ``release_store`` when done."""
    return _stores.acquire(path)


def release_store(store: EmbeddedStore) -> None:
    """Give back a store from ``open_store``."""
    _stores.release(store)
