"""The live tail: filtered subscriptions to newly committed events.

The writer calls ``TailHub.on_commit`` after every commit (on its thread); the hub hands the
batch to the event loop, where each subscriber's filter (all of it, related resources included)
picks its events into a bounded buffer. A subscriber that falls behind loses the overflow and is
told how many events it missed — never silently shorted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import format_time, us_to_datetime
from collector.domain.filters import EventFilter

_SEEN_MAX = 10_000


class Subscription:
    """One subscriber's bounded buffer of matching events (Prefect-shaped dicts)."""

    def __init__(self, filter: EventFilter, buffer: int) -> None:
        self.filter = filter
        self._buffer = buffer
        self._queue: deque[dict[str, Any]] = deque()
        # Ids already delivered (backfill, or a re-sent duplicate): never delivered twice.
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._missed = 0
        self._ready = asyncio.Event()
        self.closed = False

    def mark_seen(self, event_id: str) -> None:
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > _SEEN_MAX:
            self._seen.discard(self._seen_order.popleft())

    def offer(self, event: dict[str, Any]) -> None:
        if event["id"] in self._seen:
            return
        if len(self._queue) >= self._buffer:
            self._missed += 1
        else:
            self._queue.append(event)
        self._ready.set()

    async def next(self) -> tuple[str, Any]:
        """``("lagged", n)`` if events were dropped since the last call, else ``("event", e)``."""
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                return "lagged", missed
            while self._queue:
                event = self._queue.popleft()
                # Checked at delivery: the backfill may have sent it while it waited here.
                if event["id"] not in self._seen:
                    self.mark_seen(event["id"])
                    return "event", event
            self._ready.clear()
            await self._ready.wait()


def _event_dict(cols: EventColumns, i: int, received_us: int) -> dict[str, Any]:
    occurred = us_to_datetime(cols.occurred_us[i])
    return {
        "occurred": occurred,
        "event": cols.names[i],
        "resource": orjson.loads(cols.resources[i]),
        "related": orjson.loads(cols.related[i]),
        "payload": orjson.loads(cols.payloads[i]),
        "id": cols.ids[i],
        "follows": cols.follows[i],
        "received": us_to_datetime(received_us),
    }


def to_wire(event: dict[str, Any]) -> dict[str, Any]:
    """A tail event as Prefect's ReceivedEvent JSON."""
    return {
        **event,
        "occurred": format_time(event["occurred"]),
        "received": format_time(event["received"]),
    }


class TailHub:
    """Fans committed events out to subscriptions; lives on the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int) -> None:
        self._loop = loop
        self._buffer = buffer
        self._subs: set[Subscription] = set()

    def subscribe(self, filter: EventFilter) -> Subscription:
        sub = Subscription(filter, self._buffer)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self._subs.discard(sub)

    def on_commit(self, cols: EventColumns, received_us: list[int]) -> None:
        """Writer-thread callback: publish on the loop, and only if anyone listens."""
        if self._subs:
            self._loop.call_soon_threadsafe(self._publish, cols, received_us)

    def _publish(self, cols: EventColumns, received_us: list[int]) -> None:
        subs = list(self._subs)
        if not subs:
            return
        for i in range(len(cols)):
            event = _event_dict(cols, i, received_us[i])
            for sub in subs:
                if sub.filter.includes(event):
                    sub.offer(event)
