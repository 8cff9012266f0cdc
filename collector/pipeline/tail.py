"""The live tail: filtered subscriptions to newly committed events.

What a subscriber is promised: every committed event its filter matches (all of it, related
resources included), in commit order, never one twice (the backfill's ids are remembered), into
a bounded buffer (``query.tail_buffer_events`` and ``query.tail_buffer_bytes``, whichever is
reached first); a subscriber that falls behind loses the
overflow and is told how many events it missed (``lagged``) — never silently shorted.

How it stays off the hot path: the writer calls ``TailHub.on_commit`` on its thread after every
commit, and that call only appends a reference to the committed columns to the hub's queue — no
matching, no copying, O(1), and nothing at all when no one listens. One tail thread
(``herald-tail``) does the work: the subscriber index (``collector.pipeline.tail_index``) looks each
batch's ``names`` / ``resource_ids`` columns up once per distinct value, so subscribers whose
filters match nothing in a batch cost nothing; candidates are confirmed with the filter's own
``includes``; a matching event's wire JSON is built once, from the columns' JSON text, and
shared by every subscriber that wants it. The event loop only moves ready bytes to the streams.

Bounds: at most ``query.max_tail_subscribers`` subscribers (one more gets ``Busy``, i.e.
UNAVAILABLE with a retry hint). If the tail thread falls behind by more than
``SHED_BACKLOG_EVENTS`` committed events (filters too costly for the ingest rate), it sheds:
a batch is then only looked up in the index, and each subscriber is told it lagged by its
candidate count — the events it *may* have missed, an upper bound for filters the index cannot
answer exactly. Beyond ``max_backlog_events`` (``MAX_BACKLOG_EVENTS`` unless the server's memory
budget sets it lower) the writer's callback stops queueing and every
subscriber is told it lagged by the whole batch, so the queue's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from datetime import timedelta
from functools import lru_cache
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import EPOCH
from collector.domain.filters import EventFilter, EventView
from collector.domain.self_metrics import NoMetrics, SelfMetrics
from collector.errors import Busy
from collector.pipeline.tail_index import TailIndex

log = logging.getLogger(__name__)

SEEN_MAX = 10_000
SHED_BACKLOG_EVENTS = 50_000
MAX_BACKLOG_EVENTS = 200_000
RETRY_AFTER_SECONDS = 5.0
# The tail thread works through a batch in slices of rows and, after each millisecond of
# work, sleeps briefly: that hands the GIL straight to the event loop and the writer, which
# would otherwise wait up to the interpreter's 5 ms switch interval for it on every wake-up
# (the "convoy" that made a busy helper thread cost I/O threads far more than its CPU time).
SLICE_ROWS = 256
SLICE_SECONDS = 0.001
PAUSE_SECONDS = 0.0002

# An event on its way to a subscriber: its id (for the never-twice check) and its wire JSON.
TailItem = tuple[str, bytes]


class Subscription:
    """One subscriber's bounded buffer of matching events, filled by the tail thread and
    drained on the event loop (so its state is guarded by a lock)."""

    def __init__(
        self,
        filter: EventFilter,
        buffer: int,
        loop: asyncio.AbstractEventLoop,
        buffer_bytes: int | None = None,
    ) -> None:
        self.filter = filter
        self._buffer = buffer
        self._buffer_bytes = buffer_bytes
        self._queued_bytes = 0  # wire JSON in _queue
        self._loop = loop
        self._lock = threading.Lock()
        self._queue: deque[TailItem] = deque()
        # Ids already delivered (backfill, or a re-sent duplicate): never delivered twice.
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._missed = 0
        self._ready = asyncio.Event()
        self._waiting = False  # the reader sleeps on _ready: the next offer must wake it
        self.closed = False

    def _mark_seen(self, event_id: str) -> None:
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > SEEN_MAX:
            self._seen.discard(self._seen_order.popleft())

    def mark_seen(self, event_id: str) -> None:
        with self._lock:
            self._mark_seen(event_id)

    def offer(self, items: list[TailItem]) -> bool:
        """Tail thread: buffer ``items`` (in commit order); what does not fit is counted.
        True if the reader sleeps and must be woken (``wake_all``)."""
        with self._lock:
            if self.closed:
                return False
            for item in items:
                if item[0] in self._seen:
                    continue
                if len(self._queue) >= self._buffer or (
                    self._buffer_bytes is not None
                    and self._queue
                    and self._queued_bytes + len(item[1]) > self._buffer_bytes
                ):
                    self._missed += 1
                else:
                    self._queue.append(item)
                    self._queued_bytes += len(item[1])
            wake, self._waiting = self._waiting, False
        return wake

    def add_missed(self, count: int) -> bool:
        """Tail thread: ``count`` events that may have matched were shed. True if the reader
        must be woken."""
        with self._lock:
            if self.closed or count <= 0:
                return False
            self._missed += count
            wake, self._waiting = self._waiting, False
        return wake

    async def next_json(self) -> tuple[str, Any]:
        """``("lagged", n)`` if events were dropped since the last call, else
        ``("event", wire_json_bytes)``."""
        while True:
            with self._lock:
                if self._missed:
                    missed, self._missed = self._missed, 0
                    return "lagged", missed
                while self._queue:
                    event_id, data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    # Checked at delivery: the backfill may have sent it while it waited here.
                    if event_id not in self._seen:
                        self._mark_seen(event_id)
                        return "event", data
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    async def next(self) -> tuple[str, Any]:
        """Like ``next_json``, with the event as a Prefect-shaped dict (times as text)."""
        kind, item = await self.next_json()
        return (kind, orjson.loads(item)) if kind == "event" else (kind, item)


def wake_all(loop: asyncio.AbstractEventLoop, subs: list[Subscription]) -> None:
    """Wake the sleeping readers of ``subs`` with one call into the loop (each call writes
    to the loop's self-pipe, a system call: one per batch, not one per subscriber)."""
    if not subs:
        return

    def wake() -> None:
        for sub in subs:
            sub._ready.set()

    try:
        loop.call_soon_threadsafe(wake)
    except RuntimeError:  # the loop is closed: the server is gone, and so are the readers
        pass


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    # Events of one batch share a few seconds: format each second once.
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def format_us(us: int) -> str:
    """``collector.domain.events.format_time(us_to_datetime(us))``, faster."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_second_text(seconds)}.{micros:06d}Z"


def wire_json(cols: EventColumns, i: int, received_us: int) -> bytes:
    """Event ``i`` as Prefect's ReceivedEvent JSON, from the columns' JSON text as stored
    (labels and payload are not parsed and re-encoded)."""
    follows = cols.follows[i]
    return "".join(
        (
            '{"occurred":"',
            format_us(cols.occurred_us[i]),
            '","event":',
            orjson.dumps(cols.names[i]).decode(),
            ',"resource":',
            cols.resources[i],
            ',"related":',
            cols.related[i] or "[]",
            ',"payload":',
            cols.payloads[i],
            ',"id":"',
            cols.ids[i],
            '","follows":',
            f'"{follows}"' if follows else "null",
            ',"received":"',
            format_us(received_us),
            '"}',
        )
    ).encode()


def _rows(cols: EventColumns, start: int, end: int) -> EventColumns:
    return EventColumns(
        ids=cols.ids[start:end],
        occurred_us=cols.occurred_us[start:end],
        names=cols.names[start:end],
        resource_ids=cols.resource_ids[start:end],
        resources=cols.resources[start:end],
        related=cols.related[start:end],
        payloads=cols.payloads[start:end],
        follows=cols.follows[start:end],
    )


class TailHub:
    """Fans committed events out to subscriptions; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buffer: int,
        max_subscribers: int = 100,
        *,
        buffer_bytes: int | None = None,
        max_backlog_events: int = MAX_BACKLOG_EVENTS,
        metrics: SelfMetrics | None = None,
    ) -> None:
        """``buffer`` events and ``buffer_bytes`` (None: no bound in bytes) per subscriber;
        ``max_backlog_events`` committed events waiting for the tail thread at most."""
        self._metrics = metrics or NoMetrics()
        self._loop = loop
        self._buffer = buffer
        self._buffer_bytes = buffer_bytes
        self._max_backlog = max_backlog_events
        self._max = max_subscribers
        self._cond = threading.Condition()
        self._subs: dict[Subscription, None] = {}  # insertion-ordered set
        self._index: TailIndex[Subscription] = TailIndex(())
        self._active = 0  # len(_subs), read without the lock on the writer's path
        self._pending: deque[tuple[EventColumns, list[int]]] = deque()
        self._pending_events = 0
        self._in_flight = 0  # events of the batch the tail thread is fanning out
        self._dropped = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def subscriber_count(self) -> int:
        return self._active

    @property
    def backlog_events(self) -> int:
        """Committed events not yet fanned out (0 = every subscriber has been offered all)."""
        with self._cond:
            return self._pending_events + self._in_flight + self._dropped

    def subscribe(self, filter: EventFilter) -> Subscription:
        """A new subscription; ``Busy`` when ``max_subscribers`` are open already."""
        with self._cond:
            if len(self._subs) >= self._max:
                self._metrics.busy("tail")
                raise Busy(
                    f"too many live-tail subscribers ({len(self._subs)} open, the limit is "
                    f"query.max_tail_subscribers = {self._max}); retry later or close a tail",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            sub = Subscription(filter, self._buffer, self._loop, self._buffer_bytes)
            self._subs[sub] = None
            self._reindex()
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._run, name="herald-tail", daemon=True)
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with sub._lock:
            sub.closed = True
            sub._queue.clear()
            sub._queued_bytes = 0
        with self._cond:
            if self._subs.pop(sub, False) is None:
                self._reindex()

    def _reindex(self) -> None:
        # Copy-on-write: the tail thread keeps using the index it took for its batch.
        self._index = TailIndex((s, s.filter) for s in self._subs)
        self._active = len(self._subs)
        self._cond.notify_all()

    def on_commit(self, cols: EventColumns, received_us: list[int]) -> None:
        """Writer-thread callback: queue a reference to the batch (O(1)), if anyone listens."""
        if not self._active:
            return
        n = len(cols)
        with self._cond:
            if self._pending and self._pending_events + n > self._max_backlog:
                self._dropped += n
            else:
                self._pending.append((cols, received_us))
                self._pending_events += n
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the tail thread (the server is stopping)."""
        with self._cond:
            self._closing = True
            self._pending.clear()
            self._pending_events = 0
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    def _is_closing(self) -> bool:
        # A call, not the attribute: ``close()`` sets it from another thread while a batch is
        # fanned out, and a type checker would take the value read under the lock as final.
        return self._closing

    def _run(self) -> None:
        started = time.perf_counter()  # of the current slice of work
        while True:
            with self._cond:
                if not (self._pending or self._dropped):
                    started = float("inf")  # about to wait: the slice ends here
                while not self._pending and not self._dropped and not self._closing:
                    if not self._subs:
                        break
                    self._cond.wait()
                if self._closing or not (self._pending or self._dropped or self._subs):
                    self._thread = None
                    return
                batch = self._pending.popleft() if self._pending else None
                if batch is not None:
                    self._pending_events -= len(batch[0])
                    self._in_flight = len(batch[0])
                shed = self._pending_events > SHED_BACKLOG_EVENTS
                dropped, self._dropped = self._dropped, 0
                index = self._index
            try:
                if dropped:
                    wake_all(
                        self._loop, [e.sub for e in index.entries if e.sub.add_missed(dropped)]
                    )
                if batch is not None:
                    cols, received = batch
                    n = len(cols)
                    started = min(started, time.perf_counter())
                    for start in range(0, n, SLICE_ROWS):
                        if self._is_closing():
                            break
                        end = start + SLICE_ROWS
                        part = cols if n <= SLICE_ROWS else _rows(cols, start, end)
                        woken = self._fan_out(index, part, received[start:end], shed=shed)
                        wake_all(self._loop, woken)
                        if time.perf_counter() - started >= SLICE_SECONDS:
                            time.sleep(PAUSE_SECONDS)
                            started = time.perf_counter()
            except Exception:  # one bad batch must not end the tail for everyone
                log.exception("live tail: fan-out of a batch failed")
            finally:
                with self._cond:
                    self._in_flight = 0

    @staticmethod
    def _fan_out(
        index: TailIndex[Subscription], cols: EventColumns, received: list[int], *, shed: bool
    ) -> list[Subscription]:
        """Offer a batch's matching events; returns the subscribers to wake."""
        candidates = index.candidates(cols)
        if not candidates:
            return []
        if shed:
            return [e.sub for e, rows in candidates.items() if e.sub.add_missed(len(rows))]
        woken: list[Subscription] = []
        views: dict[int, EventView] = {}
        items: dict[int, TailItem] = {}
        for entry, rows in candidates.items():
            sub = entry.sub
            if sub.closed:
                continue
            if not entry.key.exact:
                includes = sub.filter.includes
                kept = []
                for i in rows:
                    view = views.get(i)
                    if view is None:
                        view = views[i] = cols.view(i)
                    if includes(view):
                        kept.append(i)
                rows = kept
            if not rows:
                continue
            out = []
            for i in rows:
                item = items.get(i)
                if item is None:
                    item = items[i] = (cols.ids[i], wire_json(cols, i, received[i]))
                out.append(item)
            if sub.offer(out):
                woken.append(sub)
        return woken
