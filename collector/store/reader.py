"""``EventReader``: every read a user can make of the store — feed pages, counts, one event,
user SQL. Synchronous (servers call it through ``asyncio.to_thread``); the CLI's offline
``--db`` mode uses the same object on a read-only store, so both paths answer alike."""

from __future__ import annotations

import os

from collector.clock import Clock, SystemClock
from collector.config import QueryConfig
from collector.domain.events import ReceivedEvent
from collector.domain.filters import EventFilter, EventOrder
from collector.errors import NotFound
from collector.store.duckdb_store import EventStore
from collector.store.queries import EventCount, Page, count_events, query_events
from collector.store.sql import SqlResult, run_readonly


class EventReader:
    """Read operations over one ``EventStore``; each call uses its own cursor."""

    def __init__(
        self,
        store: EventStore,
        config: QueryConfig,
        *,
        clock: Clock | None = None,
        token_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock or SystemClock()
        # Page tokens are signed with a per-process key: a token outlives neither a restart
        # nor a tampering attempt (documented in docs/feed.md).
        self._token_key = token_key or os.urandom(32)

    def query(
        self, filter: EventFilter | None, limit: int | None = None, page_token: str | None = None
    ) -> Page:
        """One feed page (``limit`` defaults to ``query.page_size``) or the page after a token."""
        cur = self.store.cursor()
        try:
            return query_events(
                cur,
                filter,
                limit or self.config.page_size,
                page_token,
                self.clock.now(),
                token_key=self._token_key,
            )
        finally:
            cur.close()

    def count(
        self,
        filter: EventFilter | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
    ) -> list[EventCount]:
        cur = self.store.cursor()
        try:
            return count_events(
                cur, filter, countable, time_unit, time_interval, now=self.clock.now()
            )
        finally:
            cur.close()

    def get(self, event_id: str) -> ReceivedEvent:
        event = self.store.get_event(event_id)
        if event is None:
            raise NotFound(f"no event with id {event_id}")
        return event

    def recent(self, filter: EventFilter, limit: int) -> list[ReceivedEvent]:
        """The newest ``limit`` matching events, oldest first (the live tail's backfill)."""
        page = self.query(filter.model_copy(update={"order": EventOrder.DESC}), limit)
        return list(reversed(page.events))

    def sql(self, sql: str) -> SqlResult:
        cur = self.store.cursor()
        try:
            return run_readonly(
                cur, sql, timeout=self.config.sql_timeout_seconds, max_rows=self.config.sql_max_rows
            )
        finally:
            cur.close()
