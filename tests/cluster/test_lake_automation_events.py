"""The automations leader's reads of a lake (collector.store.lake.automation_events): events in
commit order across collectors whose ``received`` clocks disagree, with keys that rise, and a
watermark that a successor (a fresh reader) resumes from exactly."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.domain.columns import EventColumns
from collector.domain.ids import uuid7_str
from collector.store.duckdb_store import columns_to_arrow
from collector.store.lake.automation_events import LakeAutomationEvents
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.testing import PostgresServer

T0 = 1_800_000_000_000_000  # µs


@pytest.fixture
def lakes(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[LakeStore, LakeStore]]:
    """Two collectors' views of one lake (a PostgreSQL catalog, a shared data path)."""
    location = LakeLocation.parse(
        postgres.catalog(postgres.create_database()), str(tmp_path / "lake")
    )
    a = LakeStore(location)
    b = LakeStore(location)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def commit(store: LakeStore, received: list[int]) -> list[str]:
    """Commit one batch whose events were received at these times (µs); their ids."""
    cols = EventColumns()
    ids = []
    for i, _ in enumerate(received):
        ids.append(uuid7_str())
        cols.append(ids[-1], T0 + i, "app.event", {"prefect.resource.id": "r"}, [], "{}", None)
    assert store.append(columns_to_arrow(cols, received)) == len(received)
    return ids


def read_all(
    events: LakeAutomationEvents, after: tuple[int, int, str], chunk: int
) -> list[tuple[str, int, int]]:
    """Every event after ``after``, read ``chunk`` at a time: (id, received, occurred)."""
    out: list[tuple[str, int, int]] = []
    while True:
        cols, received = events.events_received_since(after, chunk)
        out += list(zip(cols.ids, received, cols.occurred_us, strict=True))
        if len(cols) < chunk:
            return out
        after = (received[-1], cols.occurred_us[-1], cols.ids[-1])


def test_events_come_in_commit_order_with_rising_times(lakes: tuple[LakeStore, LakeStore]) -> None:
    a, b = lakes
    # Collector b's clock is behind: its events, committed later, were "received" earlier.
    first = commit(a, [T0 + 1000, T0 + 1000, T0 + 2000])
    second = commit(b, [T0 + 10, T0 + 20])
    third = commit(a, [T0 + 3000])
    start = (T0, -1, "00000000-0000-0000-0000-000000000000")

    events = LakeAutomationEvents(a)
    seen = read_all(events, start, chunk=2)
    assert [i for i, _, _ in seen] == first + second + third  # commit order
    times = [t for _, t, _ in seen]
    assert times == [T0 + 1000, T0 + 1001, T0 + 2000, T0 + 2001, T0 + 2002, T0 + 3000]
    assert all(x < y for x, y in itertools.pairwise(times))

    # A successor (another collector, nothing cached) resumes after any watermark and reads
    # the same events with the same times.
    for cut in range(1, len(seen)):
        event_id, mark, occurred = seen[cut - 1]
        successor = LakeAutomationEvents(b)
        rest = read_all(successor, (mark, occurred, event_id), chunk=100)
        assert rest == seen[cut:], cut
    # A reader that reached the end reads nothing more until the lake moves on.
    last_id, last_mark, last_occurred = seen[-1]
    end = (last_mark, last_occurred, last_id)
    assert len(events.events_received_since(end, 100)[0]) == 0
    assert len(events.events_received_since(end, 100)[0]) == 0
    # Committed after the watermark, whatever its clock: found (by the same reader too).
    late = commit(b, [T0 + 5])
    assert read_all(events, end, 100) == [(late[0], T0 + 3001, T0)]
    assert read_all(LakeAutomationEvents(b), (last_mark, last_occurred, last_id), 100) == [
        (late[0], T0 + 3001, T0)
    ]


def test_a_followers_leader_counts_as_processed_only_if_committed_before_it(
    lakes: tuple[LakeStore, LakeStore],
) -> None:
    a, b = lakes
    before = commit(a, [T0 + 100])
    follower = commit(b, [T0 + 50])  # committed after `before`, received "earlier"
    after = commit(a, [T0 + 10])  # committed after the follower, received earlier still
    events = LakeAutomationEvents(b)
    seen = read_all(events, (T0, -1, "00000000-0000-0000-0000-000000000000"), chunk=100)
    assert [i for i, _, _ in seen] == before + follower + after
    at = seen[1][1]  # the follower's evaluation time
    window = 30 * 60 * 1_000_000
    assert events.event_received_before(before[0], at, window)
    assert not events.event_received_before(after[0], at, window)
    assert not events.event_received_before(uuid7_str(), at, window)
