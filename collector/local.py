"""``LocalReader``: the CLI's offline mode (``--db PATH``): the reading half of
``HeraldClient``'s interface over a store opened read-only, for when no server runs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from collector.config import QueryConfig
from collector.domain.filters import parse_filter
from collector.store.duckdb_store import EventStore
from collector.store.reader import EventReader


class LocalReader:
    """Same read methods and return shapes as ``HeraldClient``, answered from a file."""

    def __init__(self, path: str, config: QueryConfig | None = None) -> None:
        self._store = EventStore(path, read_only=True)
        self._reader = EventReader(self._store, config or QueryConfig())

    def query(
        self, filter: dict[str, Any] | None, limit: int | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        page = self._reader.query(None if page_token else parse_filter(filter), limit, page_token)
        return {
            "events": [e.to_dict() for e in page.events],
            "total": page.total,
            "next_page": page.next_page,
        }

    def count(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
    ) -> list[dict[str, Any]]:
        counts = self._reader.count(parse_filter(filter), countable, time_unit, time_interval)
        return [c.to_dict() for c in counts]

    def get(self, event_id: str) -> dict[str, Any]:
        return self._reader.get(event_id).to_dict()

    def sql(self, sql: str) -> tuple[pa.Table, bool]:
        result = self._reader.sql(sql)
        return result.table, result.truncated

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> LocalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
