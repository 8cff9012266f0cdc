"""The events store's interface: what the rest of Herald needs from a storage backend.

The receivers, the feed, the live tail and the CLI's offline reader depend on these protocols;
a backend implements them in ``collector/store/`` and ``collector/app.py`` wires it in. The
DuckDB backend: ``store.duckdb_store.EventStore`` (``EventLog``), ``store.writer.BatchWriter``
(the ``EventSink`` of ``collector/pipeline/sink.py`` and ``CommitNotices``),
``store.reader.EventReader`` (``EventReads``) and ``store.automations_store.AutomationStore``
(``collector.domain.automation_state.AutomationStateStore``). Nothing here names a database,
a cursor or SQL text: filters arrive as ``EventFilter`` models and every backend turns them into
its own query language (DuckDB's: ``store/filter_sql.py``).

A second backend (DuckLake with a PostgreSQL catalog, say) implements the five — appending a
batch with group commit, announcing commits, pages with keyset tokens, counts, one event, user
SQL collected and streamed, retention slices, checkpoint and close — and reuses the domain's
rules (``domain/feed.py``: pages, counts and their time buckets; ``domain/filters.py``: what
a filter means). Every call blocks (callers use threads). Errors are ``collector.errors``':
``NotFound``, ``InvalidFilter``, ``InvalidSql``, ``StoreError``, ``Busy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Protocol

import pyarrow as pa

from collector.domain.columns import EventColumns
from collector.domain.events import ReceivedEvent
from collector.domain.feed import CountResult, EventCount, Page
from collector.domain.filters import EventFilter

# Called right after each commit (on the committing thread) with the committed columns and their
# ``received`` stamps in µs: the live tail and the automations runtime learn of new events
# this way, never by polling the store.
CommitListener = Callable[[EventColumns, list[int]], None]


class CommitNotices(Protocol):
    """The tail hand-off: who is told about each commit, in commit order."""

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` with every batch committed from now on, in commit order."""
        ...


class SqlRows(Protocol):
    """A user statement's result collected under the terminal's limits."""

    @property
    def table(self) -> pa.Table: ...

    @property
    def truncated(self) -> bool:
        """Rows were cut at ``query.sql_max_rows`` / ``query.sql_max_result_bytes``."""
        ...


class SqlRowStream(Protocol):
    """A user statement's result read one Arrow record batch at a time (bounded memory).
    ``rows`` counts the rows read so far, ``truncated`` is known once every batch is read,
    ``deadline`` is the ``time.monotonic()`` by which the statement must be done (None: no
    limit). Closing it early stops the statement; ``close`` is idempotent."""

    schema: pa.Schema
    rows: int
    truncated: bool
    deadline: float | None

    def read_next(self) -> pa.RecordBatch | None: ...

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...

    def read_all(self) -> pa.Table: ...

    def close(self) -> None: ...


class EventReads(Protocol):
    """Every read a user can make: feed pages, counts, one event, the tail's backfill and
    read-only SQL. Used by the server (through threads) and by the CLI's offline reader."""

    @property
    def sql_concurrency(self) -> int:
        """How many user statements may run at once (``query.sql_concurrency``)."""
        ...

    def query(
        self, filter: EventFilter | None, limit: int | None = None, page_token: str | None = None
    ) -> Page:
        """One feed page (``limit`` None: ``query.page_size``) or the page after ``page_token``
        (keyset paging; the token carries the frozen filter, ``InvalidFilter`` if forged)."""
        ...

    def count(
        self,
        filter: EventFilter | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
    ) -> list[EventCount]:
        """Prefect's count-by (event, resource, time buckets; ``domain/feed.py``'s rules)."""
        ...

    def count_groups(
        self,
        filter: EventFilter | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
        limit: int | None = None,
    ) -> CountResult:
        """``count`` cut to the ``limit`` largest groups, with how many groups there were."""
        ...

    def get(self, event_id: str) -> ReceivedEvent:
        """One event (``NotFound`` when there is none)."""
        ...

    def recent(self, filter: EventFilter, limit: int) -> list[ReceivedEvent]:
        """The newest ``limit`` matching events, oldest first (the live tail's backfill)."""
        ...

    def sql_time_limit(self, *, all_rows: bool) -> float | None:
        """Seconds a statement may run (an export, ``all_rows``, may have no limit: None)."""
        ...

    def sql(self, sql: str) -> SqlRows:
        """One read-only statement, collected under the terminal's limits (``InvalidSql``
        for a statement that writes or reaches outside the events)."""
        ...

    def sql_stream(self, sql: str, *, all_rows: bool) -> SqlRowStream:
        """One read-only statement open as a stream (``all_rows``: every row, for an export);
        the caller closes it."""
        ...


class EventLog(Protocol):
    """The stored events as the server's lifecycle drives them: retention, checkpoints and
    close. (Appends go through the backend's ``EventSink``, which owns group commit.)"""

    def get_event(self, event_id: str) -> ReceivedEvent | None: ...

    def count_events(self) -> int: ...

    def delete_expired(
        self, default_cutoff: datetime, overrides: Mapping[str, datetime], max_rows: int
    ) -> int:
        """Retention, one bounded slice: delete at most ``max_rows`` events that occurred before
        their cutoff (``overrides`` by event name, else ``default_cutoff``) and return how many
        went; fewer than ``max_rows`` means none are left."""
        ...

    def checkpoint(self) -> bool:
        """Fold recent writes into the main files; False if the backend had to skip it now."""
        ...

    def close(self) -> None: ...


__all__ = [
    "CommitListener",
    "CommitNotices",
    "EventLog",
    "EventReads",
    "SqlRowStream",
    "SqlRows",
]
