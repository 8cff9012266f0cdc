"""``RunJournal``: the runner's bookkeeping writes — action-run outcomes and "this firing was
announced" marks — batched into one store transaction at a time.

A transaction per run (as before) meant thousands of small writes queued in worker threads
behind a runaway automation, each taking the store's write lock: everything else that needed
a thread or the lock (a pause, a read of the automation) waited behind them (Herald issue 9:
pause took 25.8 s). Here at most one write is in flight; what arrives meanwhile goes into the
next one, so a burst costs a handful of transactions.

A write that keeps failing is given up after a few tries (logged): those runs stay
``triggered`` in the store and are resumed after a restart, as an interrupted run is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from uuid import UUID

from collector.domain.automation_records import ActionRun
from collector.errors import StoreError

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 4
RETRY_DELAY_SECONDS = 0.2

# Runs the store write (runs, announced firing ids) off the event loop.
Write = Callable[[Sequence[ActionRun], Sequence[UUID]], Awaitable[None]]


class RunJournal:
    """Batches ``update_runs`` writes; futures say when a record is in the store."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._runs: dict[UUID, ActionRun] = {}
        self._announced: list[UUID] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None

    def record(
        self, runs: Iterable[ActionRun] = (), announced: Iterable[UUID] = ()
    ) -> asyncio.Future[None]:
        """Queue finished runs and announced firings for the next write; the future is done
        once that write has ended (stored, or given up and logged)."""
        for run in runs:
            self._runs[run.id] = run
        self._announced.extend(announced)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="automations-journal")
        return waiter

    async def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        if self._runs or self._announced or self._waiters:
            await self.record()

    @property
    def pending(self) -> int:
        return len(self._runs) + len(self._announced)

    async def _flush(self) -> None:
        while self._waiters:
            runs = list(self._runs.values())
            announced = self._announced
            waiters = self._waiters
            self._runs, self._announced, self._waiters = {}, [], []
            try:
                if runs or announced:
                    await self._write_retrying(runs, announced)
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _write_retrying(self, runs: list[ActionRun], announced: list[UUID]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await self._write(runs, announced)
                return
            except StoreError as exc:
                if attempt == WRITE_ATTEMPTS:
                    log.error(
                        "could not record %d action run(s) and %d announcement(s); they are "
                        "resumed after a restart: %s",
                        len(runs),
                        len(announced),
                        exc,
                    )
                    return
                log.warning("recording action runs failed (retrying): %s", exc)
                await asyncio.sleep(RETRY_DELAY_SECONDS * attempt)
