"""Live mode of the feed: ``GET /live`` is a Server-Sent Events stream of the rows the live tail
(``collector.pipeline.tail``) delivers for the page's filter, rendered by the server.

Throttled: a message goes out at most every ``FLUSH_SECONDS`` and renders at most ``MAX_ROWS``
rows; what arrives beyond that in one interval is only counted (``skipped``), so 1,000 events/s
cost the browser four small DOM updates a second (the list then shows a sample, and says so).
A pump task moves the subscription's events into a bounded list (``MAX_PENDING``) while the
sender waits out its interval; the tail's own buffer and its ``lagged`` count bound what is
held further up.

``LiveStreams.close()`` ends every open stream at shutdown, so a browser left open on the feed
never holds ``herald serve`` for its grace time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from collector.domain.event_store import EventReads
from collector.domain.filters import EventFilter
from collector.pipeline.tail import Subscription, TailHub

FLUSH_SECONDS = 0.25
MAX_ROWS = 25  # rows per message: at 4 messages a second, more than anyone reads
MAX_PENDING = 500
BACKFILL_EVENTS = 50
HEARTBEAT_SECONDS = 15.0

RenderRows = Callable[[list[dict[str, Any]]], str]


class LiveStreams:
    """The open live streams of one server (closed together at shutdown)."""

    def __init__(self) -> None:
        self._stops: set[asyncio.Event] = set()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for stop in list(self._stops):
            stop.set()

    async def serve(
        self,
        request: web.Request,
        tail: TailHub,
        reader: EventReads,
        filter: EventFilter,
        after: datetime | None,
        render: RenderRows,
    ) -> web.StreamResponse:
        """Subscribe (``Busy`` when the tail is full: raised before the response starts),
        then stream until the client leaves or the server stops."""
        sub = tail.subscribe(filter)
        stop = asyncio.Event()
        self._stops.add(stop)
        if self.closed:
            stop.set()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            backfill = await asyncio.to_thread(reader.recent, filter, BACKFILL_EVENTS)
            rows = []
            for event in backfill:
                sub.mark_seen(str(event.id))
                if after is None or event.occurred > after:
                    rows.append(event.to_dict())
            if rows:
                rows = rows[::-1][:MAX_ROWS]  # newest first, as the page lists them
                await _send(response, render(rows), len(rows), 0, 0)
            await _stream(response, sub, stop, render)
        except ConnectionResetError:  # the browser left (closed the tab, turned live off)
            pass
        finally:
            self._stops.discard(stop)
            tail.unsubscribe(sub)
        return response


async def _send(
    response: web.StreamResponse, html: str, rows: int, skipped: int, lagged: int
) -> None:
    body = orjson.dumps({"html": html, "rows": rows, "skipped": skipped, "lagged": lagged})
    await response.write(b"event: rows\ndata: " + body + b"\n\n")


async def _stream(
    response: web.StreamResponse, sub: Subscription, stop: asyncio.Event, render: RenderRows
) -> None:
    pending: list[bytes] = []
    counts = {"skipped": 0, "lagged": 0}
    wake = asyncio.Event()

    async def pump() -> None:
        while True:
            kind, item = await sub.next_json()
            if kind == "lagged":
                counts["lagged"] += int(item)
            elif len(pending) >= MAX_PENDING:
                counts["skipped"] += 1
            else:
                pending.append(item)
            wake.set()

    pumping = asyncio.create_task(pump(), name="herald-live-pump")
    stopping = asyncio.create_task(stop.wait(), name="herald-live-stop")
    try:
        while not stop.is_set():
            waking = asyncio.create_task(wake.wait())
            done, _ = await asyncio.wait(
                {waking, stopping, pumping},
                timeout=HEARTBEAT_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waking.cancel()
            if pumping in done:
                pumping.result()  # the pump failed: raise its error
            if stop.is_set():
                break
            if not done:
                await response.write(b": ping\n\n")  # a dead client shows up as a write error
                continue
            wake.clear()
            # The newest rows are shown; older ones of a burst are only counted.
            items = pending[-MAX_ROWS:]
            skipped = counts["skipped"] + len(pending) - len(items)
            pending.clear()
            lagged = counts["lagged"]
            counts["skipped"] = counts["lagged"] = 0
            if items or skipped or lagged:
                rows = [orjson.loads(i) for i in reversed(items)]
                await _send(response, render(rows), len(rows), skipped, lagged)
            # The throttle: at most one message per interval, however fast events arrive.
            await asyncio.wait({stopping}, timeout=FLUSH_SECONDS)
    finally:
        for task in (pumping, stopping):
            task.cancel()
        for task in (pumping, stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task
