"""``AutomationEventReads``: the reads of the ``events`` table the automations runtime needs —
events received since a watermark (the replay after a restart), whether a leader event was
received before a follower, an event's name by id (resumed actions), and events that
occurred in a time range (backtests). Part of ``AutomationStore``; reads use their own cursors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import duckdb

from collector.domain.automation_records import EventKey
from collector.domain.columns import EventColumns
from collector.errors import StoreError
from collector.store.duckdb_store import EventStore

_EVENT_COLUMNS = (
    "id::VARCHAR, epoch_us(occurred), event, resource_id, resource, related, payload, "
    "follows::VARCHAR, epoch_us(received)"
)


def _columns(rows: Sequence[tuple[Any, ...]]) -> tuple[EventColumns, list[int]]:
    cols = EventColumns()
    received: list[int] = []
    for id_, occurred, name, rid, resource, related, payload, follows, rec in rows:
        cols.append_json(id_, occurred, name, rid, resource, related, payload, follows)
        received.append(rec)
    return cols, received


class AutomationEventReads:
    """Event reads on one ``EventStore``, for the automations runtime."""

    _store: EventStore

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A read cursor on the events (the lake's reads override this)."""
        return self._store.cursor()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._cursor()
        try:
            return cur.execute(sql, list(params)).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc
        finally:
            cur.close()

    def events_received_since(self, after: EventKey, limit: int) -> tuple[EventColumns, list[int]]:
        """The first ``limit`` events after the key ``after`` in (received, occurred, id)
        order — the evaluation order, so a replay continues exactly where evaluation was."""
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE received >= make_timestamptz(?) "
            "AND (epoch_us(received), epoch_us(occurred), id) > (?, ?, ?::UUID) "
            "ORDER BY received, occurred, id LIMIT ?"
        )
        return _columns(self._read(sql, [after[0], *after, limit]))

    def event_received_before(self, event_id: str, received_us: int, window_us: int) -> bool:
        """The event is stored and was received in ``[received_us - window_us, received_us)``
        (the window keeps the lookup to recent row groups)."""
        rows = self._read(
            "SELECT 1 FROM events WHERE received >= make_timestamptz(?) "
            "AND received < make_timestamptz(?) AND id = TRY_CAST(? AS UUID) LIMIT 1",
            [received_us - window_us, received_us, event_id],
        )
        return bool(rows)

    def stored_event_name(self, event_id: UUID, received_since: datetime) -> str | None:
        """The name of a stored event received since ``received_since``, or None."""
        rows = self._read(
            "SELECT event FROM events WHERE received >= ? AND id = ? LIMIT 1",
            [received_since, event_id],
        )
        return str(rows[0][0]) if rows else None

    @staticmethod
    def _range(since: datetime, until: datetime, names: list[str] | None) -> tuple[str, list[Any]]:
        where = "occurred >= ? AND occurred <= ?"
        params: list[Any] = [since, until]
        if names is not None:
            where += " AND list_contains(?, event)"
            params.append(names)
        return where, params

    def count_events_between(
        self, since: datetime, until: datetime, names: list[str] | None = None
    ) -> int:
        where, params = self._range(since, until, names)
        rows = self._read(f"SELECT count(*) FROM events WHERE {where}", params)
        return int(rows[0][0]) if rows else 0

    def events_between(
        self,
        since: datetime,
        until: datetime,
        after: tuple[int, str] | None,
        limit: int,
        names: list[str] | None = None,
    ) -> tuple[EventColumns, list[int]]:
        """Events that occurred in ``[since, until]`` (optionally only these names), in
        (occurred, id) order after the keyset ``after``."""
        where, params = self._range(since, until, names)
        if after is not None:
            where += " AND (epoch_us(occurred), id) > (?, ?::UUID)"
            params += list(after)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY occurred, id LIMIT ?"
        return _columns(self._read(sql, [*params, limit]))
