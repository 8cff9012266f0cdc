"""The storage seam (``collector.domain.event_store``): each backend's parts — the DuckDB
file's, and DuckLake's on a real PostgreSQL catalog — used only through the protocols the
server and the offline reader see: append through the sink, the commit hand-off, a page and the
next by token, counts, one event, SQL collected and streamed, a retention slice, checkpoint and
close. mypy checks the assignments to the protocol types; the calls check that the seam carries
the behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.clock import SystemClock
from collector.config import QueryConfig
from collector.domain.columns import EventColumns
from collector.domain.event_store import CommitNotices, EventLog, EventReads
from collector.domain.events import datetime_to_us
from collector.domain.filters import parse_filter
from collector.domain.ids import uuid7_str
from collector.errors import NotFound
from collector.pipeline.sink import EventSink
from collector.store.duckdb_store import EventStore
from collector.store.lake.follower import LakeCommits, SnapshotFollower
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.store.reader import EventReader
from collector.store.writer import BatchWriter
from collector.testing import PostgresServer


def _events(n: int, occurred: datetime) -> tuple[EventColumns, list[str]]:
    cols = EventColumns()
    ids = [uuid7_str() for _ in range(n)]
    for i, event_id in enumerate(ids):
        cols.append(
            event_id,
            datetime_to_us(occurred + timedelta(seconds=i)),
            f"seam.{i % 2}",
            {"prefect.resource.id": f"svc.{i % 3}"},
            [],
            '{"n": 1}',
        )
    return cols, ids


@dataclass
class Backend:
    log: EventLog
    sink: EventSink
    commits: CommitNotices
    reads: EventReads
    writer: BatchWriter  # runs a call after the listeners of a commit, on the same thread
    settle: Callable[[], object]  # until other writers' commits are announced (lake: a poll)


@pytest.fixture(params=["duckdb", "ducklake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    config = QueryConfig(page_size=3)
    if request.param == "duckdb":
        store = EventStore(tmp_path / "s.duckdb")
        writer = BatchWriter(store, batch_max_events=100, queue_max_events=1000)
        writer.start()
        try:
            yield Backend(
                store,
                writer,
                writer,
                EventReader(store, config, clock=SystemClock()),
                writer,
                lambda: None,
            )
        finally:
            writer.stop()
            store.close()
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    location = LakeLocation.parse(postgres.catalog(postgres.create_database()), str(tmp_path))
    lake = LakeStore(location)
    writer = BatchWriter(lake, batch_max_events=100, queue_max_events=1000)
    writer.start()
    follower = SnapshotFollower(lake, 0.05)
    follower.start()
    try:
        commits = LakeCommits(writer, follower)
        yield Backend(
            lake,
            writer,
            commits,
            EventReader(lake, config, clock=SystemClock()),
            writer,
            follower.poll,
        )
    finally:
        follower.stop()
        writer.stop()
        lake.close()


def test_a_backend_works_through_the_interfaces(backend: Backend) -> None:
    log, sink, commits, reads, writer = (
        backend.log,
        backend.sink,
        backend.commits,
        backend.reads,
        backend.writer,
    )
    seen: list[int] = []
    commits.add_listener(lambda cols, received: seen.append(len(cols)))
    try:
        now = datetime.now(UTC)
        old, _ = _events(2, now - timedelta(days=400))
        fresh, ids = _events(5, now - timedelta(minutes=5))
        assert sink.submit_nowait(old).result(timeout=30) == 2
        assert asyncio.run(sink.submit(fresh)) == 5
        writer.call(lambda: None).result(timeout=30)  # runs after the listeners, same thread
        assert seen == [2, 5]

        first = reads.query(parse_filter({"event": {"prefix": ["seam."]}}))
        assert first.total == 5 and len(first.events) == 3 and first.next_page
        second = reads.query(None, None, first.next_page)
        assert len(second.events) == 2 and second.next_page is None
        assert {str(e.id) for e in first.events + second.events} == set(ids)
        counts = reads.count_groups(None, "event", limit=1)
        assert counts.groups == 2 and counts.counts[0].count == 3
        assert str(reads.get(ids[0]).id) == ids[0]
        with pytest.raises(NotFound):
            reads.get(uuid7_str())
        assert reads.sql("SELECT count(*) AS n FROM events").table.to_pylist() == [{"n": 7}]
        stream = reads.sql_stream("SELECT id FROM events", all_rows=True)
        try:
            assert stream.read_all().num_rows == 7
        finally:
            stream.close()

        cutoff = now - timedelta(days=30)
        assert writer.call(lambda: log.delete_expired(cutoff, {}, 100)).result(timeout=30) == 2
        assert log.count_events() == 5
        assert log.checkpoint() is True
        backend.settle()
        assert seen == [2, 5]  # a backend that follows other writers does not repeat its own
    finally:
        writer.stop()
