"""``BatchWriter``: the single writer thread and its bounded queue (group commit).

Ingest requests ``submit`` columns and wait; the writer thread takes everything queued (up to
``batch_max_events``), inserts it in one Arrow ``INSERT`` and one commit, and only then resolves
every waiting request — so "acknowledged" always means "committed", and many concurrent requests
share one commit. The queue is bounded by events: when full, ``submit`` raises ``Busy`` at once
(never unbounded memory, never a silent drop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import pyarrow as pa

from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.errors import Busy, HeraldError, StoreError
from collector.store.duckdb_store import EventStore, columns_to_arrow

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
IDLE_CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024

# Called on the writer thread after each commit with the committed columns and received stamps.
CommitListener = Callable[[EventColumns, list[int]], None]


@dataclass(slots=True)
class _Pending:
    columns: EventColumns
    received_us: list[int]
    done: Future[int]


class BatchWriter:
    """Owns all writes to the events table once started."""

    def __init__(self, store: EventStore, *, batch_max_events: int, queue_max_events: int) -> None:
        self._store = store
        self._batch_max = batch_max_events
        self._queue_max = queue_max_events
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listeners: list[CommitListener] = []

    def add_listener(self, listener: CommitListener) -> None:
        """Register a callback run after every commit (live tail, automations)."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="herald-writer", daemon=True)
        self._thread.start()

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def submit_nowait(self, columns: EventColumns) -> Future[int]:
        """Queue ``columns``; the future resolves to rows inserted once they are committed.

        Raises ``Busy`` when the queue is full and ``StoreError`` when the writer is stopped.
        """
        done: Future[int] = Future()
        n = len(columns)
        if n == 0:
            done.set_result(0)
            return done
        with self._cond:
            # Stamped under the queue lock: `received` order is queue order is commit order,
            # whichever thread submits (the automations watermark relies on it).
            received = now_us()
            if self._stopping:
                raise StoreError("the store is shutting down")
            # A single request larger than the whole queue is still let in when the queue is
            # empty, so it cannot starve forever.
            if self._queued_events and self._queued_events + n > self._queue_max:
                raise Busy(
                    f"ingest queue is full ({self._queued_events} events waiting); retry shortly",
                    retry_after=1.0,
                )
            self._queue.append(_Pending(columns, [received] * n, done))
            self._queued_events += n
            self._cond.notify()
        return done

    async def submit(self, columns: EventColumns) -> int:
        """Queue ``columns`` and wait until they are committed."""
        return await asyncio.wrap_future(self.submit_nowait(columns))

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                if not self._cond.wait(IDLE_SECONDS) and not self._queue:
                    # Idle: a good moment for the checkpoint DuckDB would otherwise run
                    # inside some busy commit.
                    self._cond.release()
                    try:
                        self._store.checkpoint_if_wal_over(IDLE_CHECKPOINT_WAL_BYTES)
                    except Exception as exc:
                        log.warning("idle checkpoint failed: %s", exc)
                    finally:
                        self._cond.acquire()
            if not self._queue:
                return None
            taken: list[_Pending] = []
            count = 0
            while self._queue and (
                not taken or count + len(self._queue[0].columns) <= self._batch_max
            ):
                item = self._queue.popleft()
                taken.append(item)
                count += len(item.columns)
            return taken

    def _release(self, taken: list[_Pending]) -> None:
        with self._cond:
            self._queued_events -= sum(len(p.columns) for p in taken)

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            try:
                tables = [columns_to_arrow(p.columns, p.received_us) for p in taken]
                table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
                self._store.append(table)
            except Exception as exc:  # every waiter must hear about the failure
                err = exc if isinstance(exc, HeraldError) else StoreError(str(exc))
                log.error("commit of %d requests failed: %s", len(taken), exc)
                self._release(taken)
                for p in taken:
                    p.done.set_exception(err)
                continue
            self._release(taken)
            for p in taken:
                p.done.set_result(len(p.columns))
            for listener in self._listeners:
                for p in taken:
                    try:
                        listener(p.columns, p.received_us)
                    except Exception:
                        log.exception("commit listener failed")

    def stop(self) -> None:
        """Commit what is queued, then end the thread (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
