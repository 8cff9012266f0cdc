"""``EventEmitter``: how the automations runtime stores the events it emits
(``herald.automation.*``, and what ``emit-event`` actions send).

They go through the same ingest path as every other producer's events: an ``EventIngest``
(``collector.pipeline.ingest.NativeIngest``, passed in by ``collector/app.py``) validates them
and commits them through the event sink. What this adds for the runtime:

* **Order.** ``submit`` starts the commit at once, in call order, and returns its task: a
  firing's announcement is queued for the sink before any event of its action runs.
* **Patience.** A busy sink (a full ingest queue) is retried for up to
  ``EMIT_RETRY_SECONDS``: the runtime's own events are not dropped because ingest is busy.
* **Resumes.** ``store(events, resumed=True)`` (an action run again after a restart) leaves out
  events already stored before the restart, found by their deterministic ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

from collector.automations.background import BackgroundTasks, WorkerThreads
from collector.clock import Clock
from collector.domain.automation_state import AutomationStateStore
from collector.errors import Busy, InvalidEvent

EMIT_RETRY_SECONDS = 30.0
# Resumed work looks this far back for what it already stored (the default retention).
RESUME_LOOKBACK = timedelta(days=7)

Refused = Callable[[int, str], None]  # (index in the submitted list, reason)


class EventIngest(Protocol):
    """Validates Prefect-shaped JSON events and commits the valid ones."""

    async def emit_items(self, items: list[Any]) -> tuple[int, list[tuple[int, str]]]:
        """Returns (events accepted, [(index, reason)] for those refused). Raises ``Busy``
        when the sink's queue is full (nothing was queued) and ``StoreError`` when it is
        stopped."""
        ...


class EventEmitter:
    """Stores the automations runtime's events through the ingest path."""

    def __init__(
        self,
        ingest: EventIngest,
        tasks: BackgroundTasks,
        store: AutomationStateStore,
        threads: WorkerThreads,
        clock: Clock,
    ) -> None:
        self._ingest = ingest
        self._tasks = tasks
        self._store = store
        self._threads = threads
        self._clock = clock

    def submit(self, events: list[dict[str, Any]]) -> asyncio.Task[None]:
        """Commit ``events`` in the background, queued now (keeping their order). The task
        fails with ``InvalidEvent`` if ingest refused one of them."""
        return self._tasks.spawn(self._commit(events, None))

    def submit_each(self, events: list[dict[str, Any]], refused: Refused) -> asyncio.Task[None]:
        """As ``submit``, but an event ingest refuses is reported to ``refused`` (the rest
        are stored) instead of failing the task."""
        return self._tasks.spawn(self._commit(events, refused))

    async def _commit(self, events: list[dict[str, Any]], refused: Refused | None) -> None:
        errors = await self._emit_retrying(events)
        if errors and refused is None:
            raise InvalidEvent(errors[0][1])
        for index, reason in errors:
            if refused is not None:
                refused(index, reason)

    async def _emit_retrying(self, events: list[dict[str, Any]]) -> list[tuple[int, str]]:
        waited = 0.0
        while True:
            try:
                _, errors = await self._ingest.emit_items(events)
                return errors
            except Busy as exc:
                if waited >= EMIT_RETRY_SECONDS:
                    raise
                pause = max(0.05, min(exc.retry_after, 1.0))
                await asyncio.sleep(pause)
                waited += pause

    async def store(self, events: list[dict[str, Any]], resumed: bool = False) -> None:
        """Store events and wait until they are committed (an action's events). For a
        resumed action, events already stored (before the restart) are not sent again."""
        if resumed:
            since = self._clock.now() - RESUME_LOOKBACK
            kept = []
            for event in events:
                name = await self._threads.run(
                    self._store.stored_event_name, UUID(event["id"]), since
                )
                if name is None:
                    kept.append(event)
            events = kept
        if events:
            await self.submit(events)
