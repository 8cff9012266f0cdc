"""``LocalReader``: the CLI's offline mode (``--db PATH``): the ``HeraldReader`` that answers
from a store file opened read-only, for when no server runs — the same methods and shapes as
``remote.HeraldClient``, so a reading command is written once for both."""

from __future__ import annotations

import threading
from typing import Any, cast

from collector.client.interface import (
    CountGroups,
    CountRow,
    EventJson,
    EventPage,
    HeraldReader,
    SqlAnswer,
)
from collector.config import QueryConfig
from collector.domain.filters import parse_filter
from collector.domain.otel_ids import parse_trace_id
from collector.domain.traces import TraceJson, read_trace
from collector.store.reader import EventReader
from collector.store.sql import ANSWER_GRACE_SECONDS, SqlResult, SqlStream, time_limit_error


class LocalReader(HeraldReader):
    """Same read methods and return shapes as ``HeraldClient``, answered from a file."""

    def __init__(self, path: str, config: QueryConfig | None = None) -> None:
        # Refuses, with one StoreError line, a file that is not a Herald store.
        self._reader = EventReader.open_file(path, config or QueryConfig())
        self._store = self._reader.store
        self._abandoned = False

    def query(
        self, filter: dict[str, Any] | None, limit: int | None = None, page_token: str | None = None
    ) -> EventPage:
        page = self._reader.query(None if page_token else parse_filter(filter), limit, page_token)
        return {
            "events": [e.to_dict() for e in page.events],
            "total": page.total,
            "next_page": page.next_page,
            "total_is_lower_bound": page.total_is_lower_bound,
        }

    def count_groups(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
        limit: int | None = None,
    ) -> CountGroups:
        result = self._reader.count_groups(
            parse_filter(filter), countable, time_unit, time_interval, limit
        )
        # ``EventCount.to_dict`` is the dict the server sends: a CountRow by construction.
        counts = cast(list[CountRow], [c.to_dict() for c in result.counts])
        return CountGroups(counts, result.groups)

    def get(self, event_id: str) -> EventJson:
        return self._reader.get(event_id).to_dict()

    def trace(self, trace_id: str) -> TraceJson:
        return read_trace(self._reader, parse_trace_id(trace_id))

    def sql(self, sql: str) -> SqlAnswer:
        """Collected under the CLI's limits. The statement runs on a thread of its own, so
        the time limit holds even while DuckDB cannot be interrupted (one huge value: see
        ``store/sql.py``): the answer is "time limit" at most ``ANSWER_GRACE_SECONDS`` late.
        The statement is left to end on its thread — not a daemon one (see
        ``server/sql_lane.py``): the process exits when DuckDB lets go of it."""
        outcome: list[SqlResult | BaseException] = []

        def run() -> None:
            try:
                outcome.append(self._reader.sql(sql))
            except BaseException as exc:  # handed to the caller below
                outcome.append(exc)

        worker = threading.Thread(target=run, name="herald-sql")
        worker.start()
        limit = self._reader.sql_time_limit(all_rows=False)
        worker.join(None if limit is None else limit + ANSWER_GRACE_SECONDS)
        if not outcome:
            self._abandoned = True
            raise time_limit_error(limit)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return SqlAnswer(outcome[0].table, outcome[0].truncated)

    def sql_stream(self, sql: str, *, all_rows: bool) -> SqlStream:
        """The result as record batches (``all_rows``: every row, for an export)."""
        return self._reader.sql_stream(sql, all_rows=all_rows)

    def close(self) -> None:
        # A statement given up on at its time limit may still be inside DuckDB: the store is
        # left to the process's exit rather than closed under it.
        if not self._abandoned:
            self._store.close()
