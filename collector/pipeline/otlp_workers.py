"""``MappingPool``: OTLP export requests mapped in worker processes, off the server's one
interpreter (``ingest.mapping_workers``; issue 13).

Mapping an OTLP request costs ~15 µs of Python per span under the GIL; in the server's process
that caps ingest at one core however many the machine has. Here a worker process gets the raw
request body (bytes, as received), decodes it (``collector.mapping.otlp_decode``), maps it
(``otlp_traces`` / ``otlp_logs``) and builds the store's Arrow batch with the store's own
``columns_to_arrow`` (handed in by ``app.py``: the pipeline does not import the store), then
sends back one Arrow IPC stream plus the per-item outcome (rejected count, reasons) — the same
``MappingResult`` figures the in-process path answers ``partial_success`` from. The server's
process does no per-span Python work: it hands the table to the writer (``submit_table``) and
answers after the commit, as before.

Guarantees, as for in-process mapping:

* **Bounded.** Requests handed to the pool and not answered yet are limited in number and in
  body bytes; past either, ``map`` raises ``Busy`` at once (UNAVAILABLE / 503 with a retry
  hint) instead of queueing without bound. One request larger than the byte budget is still
  let in when nothing else is waiting, so it cannot starve.
* **A worker that dies** (killed, out of memory) breaks the executor; every request it held
  fails with ``Busy`` ("retry"), nothing of those requests was handed to the writer, so nothing
  acknowledged is lost, and the next request starts a fresh set of workers.
* **Clean shutdown.** ``close`` waits for the requests in flight and ends the workers; the
  workers ignore SIGINT (a Ctrl-C reaches the whole process group, and the server drains on it:
  its workers must outlive the drain). A server killed outright never closes its pool: each
  worker watches its server and leaves with it (then the forkserver ends too).
* **Logs.** What Herald's code logs in a worker comes back with the answer and is logged by
  the server, in its format.

Workers start with the first OTLP request (a server that gets none pays nothing), in a thread
so the event loop goes on serving, through a ``forkserver`` that has this module's imports
preloaded (forking a server whose gRPC and writer threads already run is unsafe; ``spawn``
would pay the imports per worker). Like any ``multiprocessing`` program, a script that runs a
``Herald`` in its own process with workers needs the ``if __name__ == "__main__":`` guard: the
workers import the script's main module.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal as signals
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess

import pyarrow as pa

from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.domain.self_metrics import NoMetrics, SelfMetrics
from collector.errors import Busy, InvalidInput
from collector.mapping.otlp_decode import INVALID_PROTOBUF, Signal, map_export

log = logging.getLogger(__name__)

# The store's batch builder: ``collector.store.arrow_batch.columns_to_arrow``.
ToArrow = Callable[[EventColumns, list[int]], pa.Table]

RETRY_AFTER_SECONDS = 1.0
# Requests in the pool per worker (one being mapped, the next ones waiting): enough to keep
# every worker busy between two of its results, few enough that a busy answer comes early.
REQUESTS_PER_WORKER = 4
# Modules the forkserver imports once, so that each worker starts with them loaded.
PRELOAD = ["collector.pipeline.otlp_workers", "collector.store.arrow_batch"]


@dataclass(frozen=True, slots=True)
class MappingJob:
    """One request for a worker (pickled to it; ``to_arrow`` travels by name)."""

    signal: Signal
    body: bytes
    json: bool
    invalid: str  # the receiver's wording for an undecodable protobuf body
    received_us: int
    limits: Limits
    to_arrow: ToArrow


@dataclass(frozen=True, slots=True)
class MappedRequest:
    """What a worker sends back: the events to store as Arrow IPC, and what was left out."""

    ipc: bytes  # one Arrow IPC stream; empty when there is nothing to store
    rows: int
    rejected: int = 0
    problems: int = 0
    error_message: str = ""
    undecodable: str = ""  # the body is not a request at all (InvalidInput's text)
    unstorable: str = ""  # the mapped batch cannot be stored (columns_to_arrow's InvalidEvent)
    logs: tuple[logging.LogRecord, ...] = ()  # what Herald's code logged in the worker

    def table(self) -> pa.Table:
        """The events to store (no copy of the buffers)."""
        return pa.ipc.open_stream(self.ipc).read_all()


def map_request(job: MappingJob) -> MappedRequest:
    """In a worker: decode, map and build the Arrow batch of one export request. What Herald's
    code logs meanwhile (an unexpected mapping failure's traceback) travels back with the
    answer and is logged by the server, with its logging configuration."""
    logs: list[logging.LogRecord] = []
    keep = _Keep(logs)
    herald_log = logging.getLogger("collector")
    herald_log.addHandler(keep)
    try:
        return replace(_map(job), logs=tuple(logs))
    finally:
        herald_log.removeHandler(keep)


def _map(job: MappingJob) -> MappedRequest:
    try:
        result = map_export(
            job.signal, job.body, job.received_us, job.limits, json=job.json, invalid=job.invalid
        )
    except InvalidInput as exc:
        return MappedRequest(b"", 0, undecodable=str(exc))
    cols = result.columns
    n = len(cols)
    ipc, unstorable = b"", ""
    if n:
        try:
            ipc = _ipc(job.to_arrow(cols, [job.received_us] * n))
        except InvalidInput as exc:
            unstorable = str(exc)
    return MappedRequest(
        ipc,
        n,
        result.rejected,
        result.problems,
        result.error_message(),
        unstorable=unstorable,
    )


class _Keep(logging.Handler):
    """Keeps a worker's log records, made picklable (message and traceback as text)."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.NOTSET)
        self._records = records
        self._text = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = self._text.formatException(record.exc_info)
            record.exc_info = None
        self._records.append(record)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _processes(executor: ProcessPoolExecutor) -> list[BaseProcess]:
    # The executor's own table of its worker processes (CPython's, stable since 3.8): it has
    # no public way to tell whether a worker died while idle.
    processes: dict[int, BaseProcess] = getattr(executor, "_processes", None) or {}
    return list(processes.values())


def _worker_init() -> None:
    # The server drains on SIGINT (Ctrl-C signals the whole process group): its workers must
    # go on mapping the requests in flight until ``close`` ends them.
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    # A server that is killed (SIGKILL, the OOM killer) never closes its pool, and a worker
    # would wait for work forever — keeping the forkserver alive too: each worker leaves with
    # the server instead.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), name="herald-server-watch", daemon=True
        ).start()


def _exit_with(parent: BaseProcess) -> None:
    parent.join()  # returns once the server's process is gone
    os._exit(0)


def _warm() -> int:
    return 0


class MappingPool:
    """Worker processes that map OTLP requests; see the module docstring."""

    def __init__(
        self,
        workers: int,
        to_arrow: ToArrow,
        *,
        max_queued_bytes: int,
        max_queued_requests: int | None = None,
        metrics: SelfMetrics | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a MappingPool needs at least one worker")
        self.workers = workers
        self._to_arrow = to_arrow
        self._max_bytes = max_queued_bytes
        self._max_requests = max_queued_requests or REQUESTS_PER_WORKER * workers
        self._metrics = metrics or NoMetrics()
        self._executor: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()
        self._lock = threading.Lock()  # the counts: done callbacks run on the executor's thread
        self._queued_requests = 0
        self._queued_bytes = 0
        self._closed = False

    @property
    def queued_requests(self) -> int:
        return self._queued_requests

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (tests, diagnostics)."""
        executor = self._executor
        if executor is None:
            return []
        return [p.pid for p in list(_processes(executor)) if p.pid is not None]

    def _pool(self) -> ProcessPoolExecutor:
        executor = self._executor
        if executor is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            executor = self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_worker_init
            )
        return executor

    def start(self) -> None:
        """Start the workers now (blocking: the first start of the forkserver imports this
        module's dependencies, ~1 s); ``map`` does it at the first request otherwise."""
        executor = self._pool()
        for future in [executor.submit(_warm) for _ in range(self.workers)]:
            future.result()

    async def _started(self) -> None:
        if self._executor is None:
            async with self._starting:  # one start for the requests that arrive meanwhile
                if self._executor is None:
                    await asyncio.to_thread(self.start)

    async def map(
        self,
        signal: Signal,
        body: bytes,
        received_us: int,
        limits: Limits,
        *,
        json: bool = False,
        invalid: str = INVALID_PROTOBUF,
    ) -> MappedRequest:
        """Map one request in a worker. ``Busy`` when the pool is full or a worker died."""
        if self._closed:
            raise Busy("the server is shutting down; retry", retry_after=RETRY_AFTER_SECONDS)
        size = len(body)
        with self._lock:
            if self._queued_requests and (
                self._queued_requests >= self._max_requests
                or self._queued_bytes + size > self._max_bytes
            ):
                self._metrics.busy("mapping_workers")
                raise Busy(
                    f"OTLP mapping workers are busy ({self._queued_requests} requests, "
                    f"{self._queued_bytes} bytes waiting); retry shortly",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._queued_requests += 1
            self._queued_bytes += size
        try:
            await self._started()
        except BaseException:
            self._done(size)
            raise
        job = MappingJob(signal, body, json, invalid, received_us, limits, self._to_arrow)
        try:
            executor, future = self._submit(job)
        except BaseException:
            self._done(size)
            raise
        future.add_done_callback(lambda _: self._done(size))
        try:
            mapped = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(executor)
            self._metrics.busy("mapping_workers")
            raise Busy(
                "an OTLP mapping worker exited while this request was being mapped; nothing "
                "of it was stored: retry",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        for record in mapped.logs:
            logging.getLogger(record.name).handle(record)
        return mapped

    def _submit(self, job: MappingJob) -> tuple[ProcessPoolExecutor, Future[MappedRequest]]:
        executor = self._pool()
        if not all(p.is_alive() for p in list(_processes(executor))):
            # A worker died while idle; the executor may not have noticed yet, and would take
            # this request only to fail it: it goes to a fresh set of workers instead.
            self._replace(executor)
            executor = self._pool()
        try:
            return executor, executor.submit(map_request, job)
        except BrokenProcessPool:  # it noticed, between the check and the submit
            self._replace(executor)
            executor = self._pool()
            return executor, executor.submit(map_request, job)

    def _done(self, size: int) -> None:
        with self._lock:
            self._queued_requests -= 1
            self._queued_bytes -= size

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Drop a broken executor (its workers are gone or being ended); the next request
        starts new ones."""
        if self._executor is broken:
            self._executor = None
            log.error("an OTLP mapping worker exited; starting new workers")
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Wait for the requests in flight, then end the workers (blocking; idempotent)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
