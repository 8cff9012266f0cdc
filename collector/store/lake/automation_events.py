"""``LakeAutomationEvents``: the event reads of the automations leader on a lake — the
``AutomationEventSource`` the cluster's automations state (``collector/cluster``) is composed
with.

**Order.** On one DuckDB file, ``received`` rises in commit order, so the evaluator's order
(received, occurred, id) is commit order and its watermark a position in it. In a lake,
several collectors stamp ``received`` on their own clocks and commit in whatever order the
lake's commit lock grants: an event received earlier may be committed later. Read by
``received``, such an event would fall behind a watermark already past it — missed, or
evaluated twice across a failover. So the leader reads the lake in *commit* order: DuckLake's
``snapshot_id`` and ``rowid`` of each row (both kept by compaction), and hands each event on
with its ``received`` raised, where needed, to one microsecond past the event before it. That
time rises strictly in commit order, so (received, occurred, id) keys still rise and the
watermark still names one position: after a restart or a failover the next leader finds the
watermark's event, takes its (snapshot, rowid), and reads on from there — the same events in
the same order with the same times, hence the same firings (stored once by id).

What this changes for users: an event whose commit was overtaken shows, in its firing, a
``received`` a little later than stored (by how late its commit was).

"Was this follower's leader processed?" (``event_received_before``) is answered by position
too: the leader was processed if it was committed before the follower being evaluated — so a
replay after a failover, when the leader may have been committed meanwhile, answers as the
live evaluation did. The other reads (an event's name, backtests) are the DuckDB file's SQL.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import duckdb

from collector.domain.automation_records import EventKey
from collector.domain.automation_state import AutomationEventSource, ForwardedEventSource
from collector.domain.columns import EventColumns
from collector.store.automation_events import _EVENT_COLUMNS, AutomationEventReads
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore
from collector.store.lake.lake_store import LAKE

# How far back of a watermark's time its event is looked up (``received`` was raised by the
# lateness of its commit at most; the runtime replays at most an hour anyway).
LOOKUP_WINDOW_US = 3_600_000_000
_PAST_EVERY_ROW = 1 << 62  # a rowid beyond any: "after the whole snapshot"
_ZERO_ID = "00000000-0000-0000-0000-000000000000"
_POSITIONS_KEPT = 8
_TIMES_KEPT = 8_192  # two replay chunks' worth of evaluation times

Position = tuple[int, int]  # (snapshot_id, rowid)


class LakeCursors(Protocol):
    """What these reads need of the lake: a cursor whose default catalog is the lake."""

    def cursor(self) -> duckdb.DuckDBPyConnection: ...


class LakeAutomationEvents(AutomationEventReads, AutomationEventSource):
    """Event reads for the automations runtime on a lake (module docstring)."""

    def __init__(self, lake: LakeCursors) -> None:
        self._lake = lake
        # Watermark key → its position: the next read almost always starts at the last one.
        self._positions: OrderedDict[EventKey, Position] = OrderedDict()
        # The evaluation time handed out → its event's position, for the last reads (the
        # evaluator asks about followers among the events just read).
        self._at: OrderedDict[int, Position] = OrderedDict()
        # (position, lake snapshot) of the last read that reached the end: the leader polls
        # every lake_follow_interval_seconds, and a quiet lake is then one catalog query.
        self._caught_up: tuple[Position, int] | None = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._lake.cursor()

    def events_received_since(self, after: EventKey, limit: int) -> tuple[EventColumns, list[int]]:
        """The first ``limit`` events committed after the event ``after`` names, in commit
        order, each with its ``received`` (µs) raised to rise strictly (module docstring)."""
        snapshot, rowid = position = self._position(after)
        newest = self._newest_snapshot()
        if self._caught_up == (position, newest):
            return EventColumns(), []
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS}, snapshot_id, rowid FROM events "
            "WHERE snapshot_id >= ? AND (snapshot_id > ? OR rowid > ?) "
            "ORDER BY snapshot_id, rowid LIMIT ?",
            [snapshot, snapshot, rowid, limit],
        )
        cols = EventColumns()
        received: list[int] = []
        floor = after[0]
        last: Position | None = None
        for id_, occurred, name, rid, resource, related, payload, follows, rec, snap, row in rows:
            floor = max(int(rec), floor + 1)
            cols.append_json(id_, occurred, name, rid, resource, related, payload, follows)
            received.append(floor)
            last = (int(snap), int(row))
            self._at[floor] = last
        while len(self._at) > _TIMES_KEPT:
            self._at.popitem(last=False)
        if last is not None:
            self._remember((floor, cols.occurred_us[-1], cols.ids[-1]), last)
        if len(rows) < limit:  # read to the end of a snapshot at least as new as `newest`
            self._caught_up = (last or position, newest)
        return cols, received

    def _newest_snapshot(self) -> int:
        rows = self._read(f"SELECT id FROM {LAKE}.current_snapshot()")
        return int(rows[0][0]) if rows else 0

    def event_received_before(self, event_id: str, received_us: int, window_us: int) -> bool:
        """The event was committed before the one evaluated at ``received_us`` (an
        evaluation time this reader handed out; otherwise: received in the window before)."""
        here = self._at.get(received_us)
        if here is None:
            return super().event_received_before(event_id, received_us, window_us)
        rows = self._read(
            "SELECT snapshot_id, rowid FROM events WHERE id = TRY_CAST(? AS UUID) "
            "AND received >= make_timestamptz(?) AND received <= make_timestamptz(?) LIMIT 1",
            [event_id, received_us - window_us, received_us + LOOKUP_WINDOW_US],
        )
        return bool(rows) and (int(rows[0][0]), int(rows[0][1])) < here

    def _remember(self, key: EventKey, position: Position) -> None:
        self._positions[key] = position
        while len(self._positions) > _POSITIONS_KEPT:
            self._positions.popitem(last=False)

    def _position(self, after: EventKey) -> Position:
        """Where in commit order the event ``after`` names is. Without one (no state yet, or
        its event gone): after the last event received by then, so everything committed
        later counts, whatever its ``received``."""
        known = self._positions.get(after)
        if known is not None:
            return known
        mark, _, event_id = after
        if event_id != _ZERO_ID:
            rows = self._read(
                "SELECT snapshot_id, rowid FROM events WHERE id = TRY_CAST(? AS UUID) "
                "AND received <= make_timestamptz(?) AND received >= make_timestamptz(?) "
                "LIMIT 1",
                [event_id, mark, mark - LOOKUP_WINDOW_US],
            )
            if rows:
                return int(rows[0][0]), int(rows[0][1])
        rows = self._read(
            "SELECT snapshot_id, rowid FROM events WHERE received <= make_timestamptz(?) "
            "AND received >= make_timestamptz(?) ORDER BY snapshot_id DESC, rowid DESC LIMIT 1",
            [mark, mark - LOOKUP_WINDOW_US],
        )
        if rows:
            return int(rows[0][0]), int(rows[0][1])
        # Nothing received in the hour before: start with the first commit of a later event.
        rows = self._read(
            "SELECT min(snapshot_id) FROM events WHERE received > make_timestamptz(?)", [mark]
        )
        first = rows[0][0] if rows else None
        if first is not None:
            return int(first) - 1, _PAST_EVERY_ROW
        rows = self._read("SELECT coalesce(max(snapshot_id), 0) FROM events")
        return int(rows[0][0]), _PAST_EVERY_ROW


class OneHostAutomationStore(ForwardedEventSource, AutomationStore):
    """The automations state of a one-host lake (a ``sqlite:`` or ``duckdb:`` catalog: one
    collector, no leader election): the automation tables in the DuckDB file at
    ``storage.path``, as without a lake, and the events read from the lake."""

    def __init__(self, store: EventStore, events: LakeAutomationEvents) -> None:
        super().__init__(store)
        self._events = events
