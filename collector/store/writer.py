"""``BatchWriter``: the single writer thread and its bounded queue (group commit).

Ingest requests ``submit`` columns and wait; the writer thread takes everything queued (up to
``batch_max_events``), inserts it in one Arrow ``INSERT`` and one commit, and only then resolves
every waiting request — so "acknowledged" always means "committed", and many concurrent requests
share one commit. The queue is bounded by events: when full, ``submit`` raises ``Busy`` at once
(never unbounded memory, never a silent drop).

A group that fails to commit is retried one request at a time, so only a request whose own data
the store refuses gets the error — ``InvalidEvent``, which is not worth retrying — and its
neighbours are committed as usual (issue 8: one poison item used to fail every request of its
commit with a retryable 503). A request whose caller gave up while it waited (a cancelled
future: the client went away) is left out of the commit and never answered.

The thread also runs the store's maintenance, so that there is one writer and no lock order to
get wrong: bounded jobs handed to ``call`` (retention slices) run between group commits, one per
commit, and checkpoints run between commits when the WAL is large or when ingest is idle —
always through ``EventStore.checkpoint``, which never waits for a reader.

The DuckDB backend's ``EventSink`` (``collector/pipeline/sink.py``) and ``CommitNotices``
(``collector/domain/event_store.py``): the receivers and the live tail know only those.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.domain.event_store import CommitListener
from collector.domain.self_metrics import NoMetrics, SelfMetrics
from collector.errors import Busy, HeraldError, InvalidInput, StoreError
from collector.process_memory import release_free_memory
from collector.store.arrow_batch import ArrowColumns, columns_to_arrow, stamp_received

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
IDLE_CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024
CHECKPOINT_RETRY_SECONDS = 5.0


@dataclass(slots=True)
class _Pending:
    columns: EventColumns
    received_us: list[int]
    done: Future[int]
    nbytes: int
    # The batch already in Arrow form (mapped in a worker process); None: built from columns.
    table: pa.Table | None = None


# Events of a batch whose text is measured to size it (the queue-bytes gauge): enough for an
# estimate, and a cost that does not grow with the batch.
SIZE_SAMPLE_EVENTS = 32
# Per event, besides its JSON text: ids, names, times, and ~50 bytes of object header for each
# of its ~8 Python strings. Measured with tracemalloc on benchmarks/soak_memory.py's 1,000-event
# bodies: the columns take ~750 bytes an event; text + 100 said ~375, text + 400 says ~675.
EVENT_OVERHEAD_BYTES = 400


def approx_bytes(columns: EventColumns) -> int:
    """About what a batch's events hold in memory: the JSON text (payload, labels) of its
    first ``SIZE_SAMPLE_EVENTS`` events, scaled to the batch, plus ``EVENT_OVERHEAD_BYTES`` per
    event for ids, names, times and the Python objects holding them. Measuring every event
    cost ~1.5 % of mapping a 1,000-event request (docs/benchmarks.md); this costs the same at
    any size."""
    n = len(columns)
    k = min(n, SIZE_SAMPLE_EVENTS)
    if not k:
        return 0
    sampled = (
        sum(map(len, columns.payloads[:k]))
        + sum(map(len, columns.resources[:k]))
        + sum(map(len, columns.related[:k]))
    )
    return sampled * n // k + EVENT_OVERHEAD_BYTES * n


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    done: Future[Any]


class CommittingStore(Protocol):
    """What the writer needs of its store: ``duckdb_store.EventStore`` (the file) or
    ``lake.lake_store.LakeStore`` (a lake, which has no WAL: it never needs a checkpoint)."""

    checkpoint_wal_bytes: int

    def append(self, batch: pa.Table) -> int: ...

    def wal_bytes(self) -> int: ...

    def checkpoint(self) -> bool: ...


class BatchWriter:
    """Owns all writes to the events table once started."""

    def __init__(
        self,
        store: CommittingStore,
        *,
        batch_max_events: int,
        queue_max_events: int,
        queue_max_bytes: int | None = None,
        metrics: SelfMetrics | None = None,
    ) -> None:
        """``queue_max_events`` and ``queue_max_bytes`` (``approx_bytes``; None: no bound in
        bytes) bound what waits for its commit: a batch past either is answered ``Busy``."""
        self._store = store
        self._metrics = metrics or NoMetrics()
        self._batch_max = batch_max_events
        self._queue_max = queue_max_events
        self._queue_max_bytes = queue_max_bytes
        self._queue: deque[_Pending] = deque()
        self._jobs: deque[_Job] = deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._reclaim = False  # a checkpoint is owed (rows were deleted)
        self._next_checkpoint = 0.0  # monotonic time before which no checkpoint is tried
        self._last_commit = self._last_idle_check = 0.0  # monotonic times
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

    @property
    def queued_bytes(self) -> int:
        """About what the queued events weigh (``approx_bytes``)."""
        return self._queued_bytes

    @property
    def alive(self) -> bool:
        """The writer thread runs and takes batches (false once stopping, or if it died)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    def submit_nowait(self, columns: EventColumns) -> Future[int]:
        """Queue ``columns``; the future resolves to rows inserted once they are committed.

        Raises ``Busy`` when the queue is full and ``StoreError`` when the writer is stopped.
        The future fails with ``InvalidEvent`` when the store refuses this batch's data."""
        return self._enqueue(columns, None, approx_bytes(columns))

    def submit_table_nowait(self, table: pa.Table) -> Future[int]:
        """``submit_nowait`` for a batch already built by ``columns_to_arrow`` (its
        ``received`` is re-stamped when queued); listeners get it as ``ArrowColumns``."""
        return self._enqueue(ArrowColumns(table), table, int(table.nbytes))

    async def submit_table(self, table: pa.Table) -> int:
        """Queue an Arrow batch and wait until it is committed."""
        return await asyncio.wrap_future(self.submit_table_nowait(table))

    def _enqueue(self, columns: EventColumns, table: pa.Table | None, nbytes: int) -> Future[int]:
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
            if self._queued_events and (
                self._queued_events + n > self._queue_max
                or (
                    self._queue_max_bytes is not None
                    and self._queued_bytes + nbytes > self._queue_max_bytes
                )
            ):
                self._metrics.busy("ingest_queue")
                raise Busy(
                    f"ingest queue is full ({self._queued_events} events, about "
                    f"{self._queued_bytes >> 20} MiB waiting); retry shortly",
                    retry_after=1.0,
                )
            self._queue.append(_Pending(columns, [received] * n, done, nbytes, table))
            self._queued_events += n
            self._queued_bytes += nbytes
            self._cond.notify()
        return done

    async def submit(self, columns: EventColumns) -> int:
        """Queue ``columns`` and wait until they are committed."""
        return await asyncio.wrap_future(self.submit_nowait(columns))

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the writer thread between two group commits; keep it short (one
        bounded slice of work), since ingest waits for it. A job not started when the writer
        stops fails with ``StoreError``."""
        done: Future[Any] = Future()
        with self._cond:
            if self._stopping:
                raise StoreError("the store is shutting down")
            self._jobs.append(_Job(fn, done))
            self._cond.notify()
        return done

    def request_checkpoint(self) -> None:
        """Ask for a checkpoint at the next idle moment (after deletes, to reclaim space)."""
        with self._cond:
            self._reclaim = True
            self._next_checkpoint = 0.0

    def _idle_checkpoint(self) -> None:
        # Called with ``_cond`` held and nothing to do: a good moment for the checkpoint that
        # would otherwise fall inside some busy commit. The lock is let go meanwhile so that
        # submitters are not held up.
        self._cond.release()
        try:
            self._maybe_checkpoint(IDLE_CHECKPOINT_WAL_BYTES)
        finally:
            self._cond.acquire()

    def _maybe_checkpoint(self, wal_bytes: int) -> None:
        """Checkpoint if one is owed (deletes to reclaim) or the WAL has ``wal_bytes``.

        ``EventStore.checkpoint`` skips while a reader stays open (a long export); then the
        next try waits ``CHECKPOINT_RETRY_SECONDS``, so that readers are not held back at every
        commit for nothing."""
        if not self._reclaim and self._store.wal_bytes() < wal_bytes:
            return
        now = time.monotonic()
        if now < self._next_checkpoint:
            return
        try:
            done = self._store.checkpoint()
            self._metrics.checkpoint("done" if done else "skipped")
        except Exception as exc:
            log.warning("checkpoint failed: %s", exc)
            self._metrics.checkpoint("failed")
            done = False
        if done:
            self._reclaim = False
            # The batches of the WAL just folded in are gone: hand their pages back
            # (collector/process_memory.py).
            release_free_memory()
        else:
            self._next_checkpoint = now + CHECKPOINT_RETRY_SECONDS

    def _take(self, job_turn: bool) -> list[_Pending] | _Job | None:
        with self._cond:
            while not self._queue and not self._jobs and not self._stopping:
                # Idle means no commit for IDLE_SECONDS; maintenance jobs (a retention pass
                # that finds nothing, every few seconds) do not count as activity.
                now = time.monotonic()
                due = max(self._last_commit, self._last_idle_check) + IDLE_SECONDS
                if now < due:
                    self._cond.wait(due - now)
                    continue
                self._last_idle_check = now
                self._idle_checkpoint()
            if self._stopping and not self._queue:
                jobs, self._jobs = list(self._jobs), deque()
                for job in jobs:
                    if job.done.set_running_or_notify_cancel():  # else its caller gave up
                        job.done.set_exception(StoreError("the store is shutting down"))
                return None
            if self._jobs and (job_turn or not self._queue) and not self._stopping:
                return self._jobs.popleft()
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
            self._queued_bytes -= sum(p.nbytes for p in taken)

    def _run(self) -> None:
        job_turn = False
        while True:
            work = self._take(job_turn)
            if work is None:
                return
            if isinstance(work, _Job):
                job_turn = False
                self._run_job(work)
                continue
            job_turn = True  # after this commit, a waiting job goes first
            committed = self._commit(work)
            self._release(work)
            self._last_commit = time.monotonic()
            for p in committed:
                p.done.set_result(len(p.columns))
            for listener in self._listeners:
                for p in committed:
                    try:
                        listener(p.columns, p.received_us)
                    except Exception:
                        log.exception("commit listener failed")
            if self._store.wal_bytes() >= self._store.checkpoint_wal_bytes:
                # Under load: the WAL (and what DuckDB holds in memory for it) must not grow
                # without bound; the reclaim after retention waits for an idle moment.
                self._maybe_checkpoint(self._store.checkpoint_wal_bytes)

    def _run_job(self, job: _Job) -> None:
        if not job.done.set_running_or_notify_cancel():
            return
        try:
            job.done.set_result(job.fn())
        except BaseException as exc:
            job.done.set_exception(exc)

    def _commit(self, taken: list[_Pending]) -> list[_Pending]:
        """Commit ``taken`` in one go if it can be; else each request alone, so that a failure
        reaches only the requests it belongs to. Returns the committed ones; the others' futures
        carry their error."""
        tables: list[pa.Table] = []
        ready: list[_Pending] = []
        for p in taken:
            # From here on the future cannot be cancelled, so setting its result or error
            # cannot fail (a cancelled one would raise InvalidStateError and end this
            # thread). A request whose caller already gave up is not committed: nobody waits
            # for its answer, and a client that retries it is deduplicated by id anyway.
            if not p.done.set_running_or_notify_cancel():
                continue
            try:
                tables.append(
                    columns_to_arrow(p.columns, p.received_us)
                    if p.table is None
                    else stamp_received(p.table, p.received_us[0])
                )
                ready.append(p)
            except HeraldError as exc:  # this request's data cannot be stored
                log.warning("refused a batch of %d events: %s", len(p.columns), exc)
                p.done.set_exception(exc)
            except Exception as exc:
                # Anything unforeseen (a library's own bug) is this request's error: escaping,
                # it would end the writer thread and no later request would ever be answered.
                log.exception("could not prepare a batch of %d events", len(p.columns))
                p.done.set_exception(
                    StoreError(f"the batch could not be prepared for the store: {exc!r}")
                )
        if not ready:
            return []
        started = time.perf_counter()
        try:
            inserted = self._store.append(
                tables[0] if len(tables) == 1 else pa.concat_tables(tables)
            )
            self._metrics.group_commit(
                sum(len(p.columns) for p in ready), inserted, time.perf_counter() - started
            )
            return ready
        except Exception as exc:
            if len(ready) == 1:
                self._fail(ready[0], exc)
                return []
            log.warning("commit of %d requests failed (%s); committing each alone", len(ready), exc)
        committed: list[_Pending] = []
        for p, table in zip(ready, tables, strict=True):
            started = time.perf_counter()
            try:
                inserted = self._store.append(table)
            except Exception as exc:
                self._fail(p, exc)
            else:
                self._metrics.group_commit(len(p.columns), inserted, time.perf_counter() - started)
                committed.append(p)
        return committed

    @staticmethod
    def _fail(p: _Pending, exc: Exception) -> None:
        if isinstance(exc, InvalidInput):
            log.warning("refused a batch of %d events: %s", len(p.columns), exc)
            err: HeraldError = exc
        else:
            log.error("commit of %d events failed: %s", len(p.columns), exc)
            err = exc if isinstance(exc, HeraldError) else StoreError(str(exc))
        p.done.set_exception(err)

    def stop(self) -> None:
        """Commit what is queued, drop maintenance jobs not started, end the thread
        (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
