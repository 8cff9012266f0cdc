"""``SqlLane``: user SQL's own threads, so a heavy query never waits for — or holds — the
default thread pool that ingest acknowledgements, the feed and the automations runner share.

Measured before it (issue 9): eight ``SELECT count(*) FROM range(1e12)`` took every thread of
asyncio's default pool for their 10 s each; reactive webhooks went from 0.07 s to 6.8–8.2 s and
a feed page to 9.5 s, queued behind them.

- At most ``query.sql_concurrency`` statements hold a slot at once (a unary ``Sql`` from start
  to answer; a ``SqlStream`` from open to close); one more is ``Busy`` at once (gRPC
  UNAVAILABLE with a retry hint), never queued.
- Each blocking call runs on a fresh thread: nothing is shared with the default pool and no
  idle threads outlive a server. Not a daemon thread: a daemon thread that returns from
  DuckDB while the interpreter shuts down aborts the process ("terminate called without an
  active exception", measured), so at exit the process waits instead for a statement DuckDB
  could not interrupt (one huge ``repeat()``) to end.
- Those threads run at a lower CPU priority (``nice`` +10; so do DuckDB's workers, see
  ``collector/niceness.py``), so the event loop, the writer and the automations runner get the
  cores first when both want them.
- A caller that stops waiting (the time limit, a client gone) does not free the slot: it is
  freed when the last thread of the statement has returned from DuckDB, so abandoned
  statements cannot pile up past the limit.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from collector.errors import Busy
from collector.niceness import SQL_NICENESS, lower_priority

T = TypeVar("T")

# The retry hint of a busy answer: a slot frees when a statement ends, typically well within.
BUSY_RETRY_SECONDS = 1.0


class SqlLane:
    """At most ``concurrency`` user SQL statements at once, each on threads of its own."""

    def __init__(self, concurrency: int, *, niceness: int = SQL_NICENESS) -> None:
        self.concurrency = concurrency or default_concurrency()
        self._niceness = niceness
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        """Slots taken now (statements running, streams open, abandoned ones not yet done)."""
        return self._held

    def admit(self) -> SqlTicket:
        """A slot for one statement, or ``Busy`` when all are taken."""
        with self._lock:
            if self._held >= self.concurrency:
                raise Busy(
                    f"SQL is busy: {self.concurrency} queries are running "
                    f"(query.sql_concurrency); retry in {BUSY_RETRY_SECONDS:g} s",
                    retry_after=BUSY_RETRY_SECONDS,
                )
            self._held += 1
        return SqlTicket(self)

    def _free(self) -> None:
        with self._lock:
            self._held -= 1

    def _lower_priority(self) -> None:
        lower_priority(niceness=self._niceness)


def default_concurrency() -> int:
    """``query.sql_concurrency = 0``: half the CPU cores this process may use, at least 1.

    Each statement running costs the rest of the server latency through the GIL: DuckDB's
    Python client takes it after every task of a query to check for signals, and a SQL thread
    that is descheduled while holding it (niced, and with more busy threads than cores) holds
    up every other Python thread. Measured on 2 cores, 8 heavy queries sent: reactive webhook
    p50 ×1.3 of idle with 1 or 2 running, ×2.0 with 4 (docs/benchmarks.md)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(1, cores // 2)


class SqlTicket:
    """One statement's slot: ``run`` its blocking calls, ``release`` when done with it. The
    slot is freed once released *and* no call of it is still running."""

    def __init__(self, lane: SqlLane) -> None:
        self._lane = lane
        self._lock = threading.Lock()
        self._running = 0
        self._released = False

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``fn(*args, **kwargs)`` on a new SQL thread; its result as a future of the running
        loop. Cancelling the future does not stop the call (DuckDB is told by the caller)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # A result nobody waits for any more (the caller timed out) must not be reported as
        # "exception never retrieved".
        future.add_done_callback(_consume)
        with self._lock:
            self._running += 1

        def succeed(outcome: T) -> None:
            if not future.done():
                future.set_result(outcome)

        def fail(error: BaseException) -> None:
            if not future.done():
                future.set_exception(error)

        def post(deliver: Callable[[], None]) -> None:
            try:
                loop.call_soon_threadsafe(deliver)
            except RuntimeError:
                pass  # the loop is closed: the server is gone, nobody waits

        def call() -> None:
            self._lane._lower_priority()
            try:
                outcome = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting coroutine
                self._call_done()
                post(partial(fail, exc))
            else:
                self._call_done()
                post(partial(succeed, outcome))

        threading.Thread(target=call, name="herald-sql").start()
        return future

    def _call_done(self) -> None:
        with self._lock:
            self._running -= 1
            free = self._released and self._running == 0
        if free:
            self._lane._free()

    def release(self) -> None:
        """The statement is done with (idempotent); its slot frees when no call runs."""
        with self._lock:
            if self._released:
                return
            self._released = True
            free = self._running == 0
        if free:
            self._lane._free()


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def within(future: asyncio.Future[T], seconds: float | None) -> T:
    """``future``'s result, or ``TimeoutError`` after ``seconds`` (``None``: no limit) — the
    call behind it goes on; cancelling this wait does not cancel it either."""
    if seconds is None:
        return await asyncio.shield(future)
    return await asyncio.wait_for(asyncio.shield(future), max(0.0, seconds))
