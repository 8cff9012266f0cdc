"""``HeraldReader``: the one reading interface of the client package, and the shapes it returns.

Two implementations: ``remote.HeraldClient`` asks a running server (gRPC), ``local.LocalReader``
opens a store file read-only (the CLI's ``--db``). Every reading command is written once
against this interface, so it works online and offline alike; results are the same JSON-ready
shapes either way (events as Prefect's ``ReceivedEvent`` JSON, times as ISO 8601 text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol, Self, TypedDict

import pyarrow as pa

from collector.domain.traces import TraceJson

# An event as Prefect's ``ReceivedEvent`` JSON: occurred, event, resource, related, payload,
# id, follows, received.
EventJson = dict[str, Any]


class EventPage(TypedDict):
    """One page of the feed: the events, how many match in all (at least, if
    ``total_is_lower_bound``: a text search's count stops at ``query.text_total_limit``), the
    next page's token."""

    events: list[EventJson]
    total: int
    next_page: str | None
    total_is_lower_bound: bool


class CountRow(TypedDict):
    """Prefect's ``EventCount``: one group (an event name, a resource or a time bucket)."""

    value: str
    label: str
    count: int
    start_time: str
    end_time: str


class CountGroups(NamedTuple):
    """Counts cut to the largest groups, and how many groups there were in all."""

    counts: list[CountRow]
    groups: int


class EventList(NamedTuple):
    """The first events of a feed, read page by page, and how many match in all."""

    events: list[EventJson]
    total: int


class EventListing(NamedTuple):
    """``EventList`` and whether ``total`` is a lower bound (a text search's count stops at
    ``query.text_total_limit``)."""

    events: list[EventJson]
    total: int
    total_is_lower_bound: bool


class SqlAnswer(NamedTuple):
    """A statement's result under the terminal's limits, and whether rows were cut."""

    table: pa.Table
    truncated: bool


class SqlBatches(Protocol):
    """A statement's result as Arrow record batches, read one at a time (bounded memory):
    ``collector.store.sql.SqlStream`` offline, ``remote.RemoteSqlStream`` online. ``rows``
    counts the rows read so far; ``truncated`` is known once every batch is read. Closing it
    early stops the statement."""

    schema: pa.Schema
    rows: int
    truncated: bool

    def read_next(self) -> pa.RecordBatch | None: ...

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...

    def read_all(self) -> pa.Table: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...  # the stream itself (each class names its own type)

    def __exit__(self, *exc: object) -> None: ...


# The largest page ``events`` asks for at once (the server caps a page at 1,000 too).
LIST_PAGE_EVENTS = 1000


class HeraldReader(ABC):
    """Reads a Herald store: the feed, counts, one event, one trace and read-only SQL. A context
    manager (leaving it closes the connection or the file). Errors are ``collector.errors``'
    hierarchy, the same from both implementations (``NotFound``, ``InvalidFilter``, …)."""

    @abstractmethod
    def query(
        self, filter: dict[str, Any] | None, limit: int | None = None, page_token: str | None = None
    ) -> EventPage:
        """One feed page for ``filter`` (Prefect's ``EventFilter`` JSON), or the page after
        ``page_token`` (``filter`` is then ignored: the token carries it)."""

    @abstractmethod
    def count_groups(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
        limit: int | None = None,
    ) -> CountGroups:
        """Matching events counted by ``countable`` (event, resource, time, …), cut to the
        ``limit`` largest groups for event/resource (``None`` or 0: all of them)."""

    @abstractmethod
    def get(self, event_id: str) -> EventJson:
        """One event by id (``NotFound`` when there is none)."""

    @abstractmethod
    def trace(self, trace_id: str) -> TraceJson:
        """One trace (``trace_id``: 32 hex digits, or ``otel.trace.<hex>``): its spans in tree
        order with parent links, service, name, start, duration, status and span events, and
        its logs (``collector.domain.traces``). ``InvalidInput`` for a malformed id,
        ``NotFound`` when no event of the trace is stored."""

    @abstractmethod
    def sql(self, sql: str) -> SqlAnswer:
        """One read-only statement collected under the terminal's limits (``query.sql_*``)."""

    @abstractmethod
    def sql_stream(self, sql: str, *, all_rows: bool) -> SqlBatches:
        """One read-only statement as a stream of batches (``all_rows``: every row, for an
        export); use it as a context manager."""

    @abstractmethod
    def close(self) -> None: ...

    def count(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
    ) -> list[CountRow]:
        """Every group's count (no cut)."""
        return self.count_groups(filter, countable, time_unit, time_interval).counts

    def events(self, filter: dict[str, Any] | None, limit: int) -> EventList:
        """The first ``limit`` events of the feed for ``filter``, following page tokens."""
        listing = self.listing(filter, limit)
        return EventList(listing.events, listing.total)

    def listing(self, filter: dict[str, Any] | None, limit: int) -> EventListing:
        """``events``, saying also whether the total is a lower bound."""
        page = self.query(filter, min(limit, LIST_PAGE_EVENTS))
        total = page["total"]  # of the first page: the count when the listing started
        lower_bound = page["total_is_lower_bound"]
        events = list(page["events"])
        while page["next_page"] and len(events) < limit:
            page = self.query(None, None, page["next_page"])
            events.extend(page["events"])
        return EventListing(events[:limit], total, lower_bound)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
