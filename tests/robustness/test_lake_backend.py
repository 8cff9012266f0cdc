"""The DuckLake backend on a real PostgreSQL catalog, as several collectors share it: each
``LakeStore`` here stands for one collector process (its own DuckDB, its own connections to
the catalog), all on one lake.

What would break in production: two collectors committing at once (DuckLake's commit race),
the same event sent to two collectors (an SDK retry behind a load balancer) stored twice, a
collector's live tail missing the others' events, user SQL reaching the catalog's file list or
the data files, the small files of group commits piling up, retention's space never coming
back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from collector.config import QueryConfig
from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.ids import uuid7_str
from collector.errors import InvalidSql
from collector.store.duckdb_store import columns_to_arrow
from collector.store.lake import extensions
from collector.store.lake.automation_events import LakeAutomationEvents
from collector.store.lake.follower import SnapshotFollower
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.store.lake.upkeep import LakeUpkeep
from collector.store.reader import EventReader
from collector.testing import PostgresServer, wait_for


def _columns(ids: list[str], occurred: datetime, name: str = "lake.test") -> EventColumns:
    cols = EventColumns()
    for i, event_id in enumerate(ids):
        cols.append(
            event_id,
            datetime_to_us(occurred + timedelta(milliseconds=i)),
            name,
            {"prefect.resource.id": f"svc.{i % 3}"},
            [],
            '{"n": 1}',
        )
    return cols


@pytest.fixture
def location(postgres: PostgresServer, tmp_path: Path) -> LakeLocation:
    return LakeLocation.parse(postgres.catalog(postgres.create_database()), str(tmp_path / "lake"))


@pytest.fixture
def open_collectors(location: LakeLocation) -> Iterator[Callable[[int], list[LakeStore]]]:
    """Opens ``n`` collectors' stores on the lake (each open loads the extensions, ~1-2 s)."""
    stores: list[LakeStore] = []

    def open_n(n: int) -> list[LakeStore]:
        stores.extend(LakeStore(location) for _ in range(n))
        return stores[-n:]

    try:
        yield open_n
    finally:
        for store in stores:
            store.close()


def _append(store: LakeStore, cols: EventColumns) -> int:
    return store.append(columns_to_arrow(cols, [datetime_to_us(datetime.now(UTC))] * len(cols)))


def test_concurrent_commits_from_three_collectors_all_land_and_dedupe_across_them(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    """Each collector commits its own events and, at the same moment, the same shared ids (a
    retried request that reached two collectors): every event is stored exactly once, and the
    answers count each shared event once in total."""
    collectors = open_collectors(3)
    now = datetime.now(UTC)
    shared = [[uuid7_str() for _ in range(20)] for _ in range(8)]
    inserted = [0, 0, 0]
    own_total = 0
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def collector(i: int) -> None:
        nonlocal own_total
        try:
            start.wait()
            for round_ids in shared:
                own = [uuid7_str() for _ in range(30)]
                inserted[i] += _append(collectors[i], _columns(own + round_ids, now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=collector, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    own_total = 3 * 8 * 30
    distinct = own_total + sum(len(r) for r in shared)
    assert sum(inserted) == distinct
    for store in collectors:  # every collector reads the whole lake
        assert store.count_events() == distinct
    cur = collectors[0].cursor()
    try:
        row = cur.execute("SELECT count(*) - count(DISTINCT id) FROM events").fetchone()
    finally:
        cur.close()
    assert row == (0,)


def test_a_resent_batch_is_a_no_op_on_another_collector(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    collectors = open_collectors(2)
    ids = [uuid7_str() for _ in range(10)]
    cols = _columns(ids, datetime.now(UTC))
    assert _append(collectors[0], cols) == 10
    assert _append(collectors[1], cols) == 0
    assert collectors[0].count_events() == collectors[1].count_events() == 10


def test_each_collector_follows_the_others_commits_but_not_its_own(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    a, b = open_collectors(2)
    follower = SnapshotFollower(b, 0.05)
    heard: list[tuple[list[str], list[int]]] = []
    follower.add_listener(lambda cols, received: heard.append((list(cols.ids), received)))
    follower.start()
    try:
        theirs = [uuid7_str() for _ in range(5)]
        mine = [uuid7_str() for _ in range(4)]
        _append(b, _columns(mine, datetime.now(UTC)))
        _append(a, _columns(theirs, datetime.now(UTC), name="from.a"))
        wait_for(lambda: heard, timeout=10, what="b's follower announcing a's commit")
        assert follower.poll() == 0  # nothing new: b's own commit is never announced
        assert [ids for ids, _ in heard] == [theirs]
        assert len(heard[0][1]) == 5 and all(r > 0 for r in heard[0][1])
    finally:
        follower.stop()


def test_user_sql_on_a_lake_reads_events_and_nothing_else(
    open_collectors: Callable[[int], list[LakeStore]], location: LakeLocation
) -> None:
    [store] = open_collectors(1)
    _append(store, _columns([uuid7_str() for _ in range(3)], datetime.now(UTC)))
    reads = EventReader(store, QueryConfig())
    assert reads.sql("SELECT count(*) AS n FROM events").table.to_pylist() == [{"n": 3}]
    assert reads.sql("SELECT count(*) AS n FROM event_resources").table.to_pylist() == [{"n": 3}]
    refused = [
        # The catalog's own tables list every data file's path.
        "SELECT * FROM __ducklake_metadata_lake.ducklake_data_file",
        "SELECT * FROM __ducklake_metadata_lake.public.ducklake_metadata",
        # The catalog's PostgreSQL, attached for the commit lock.
        "SELECT * FROM __herald_pg.public.ducklake_snapshot",
        f"SELECT * FROM read_parquet('{location.data_path}**/*.parquet')",
        "SELECT * FROM ducklake_snapshots('lake')",
        "SELECT * FROM postgres_query('__herald_pg', 'SELECT 1')",
        f"ATTACH '{location.data_path}x.duckdb' AS x",
        f"COPY (SELECT 1) TO '{location.data_path}x.csv'",
        "DELETE FROM events",
    ]
    for sql in refused:
        with pytest.raises(InvalidSql):
            reads.sql(sql)
    assert store.count_events() == 3


def test_the_extensions_come_from_the_installed_wheels(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    [store] = open_collectors(1)
    path = extensions.extension_file("ducklake")
    assert path.is_file() and "site-packages" in path.parts
    assert f"v{duckdb.__version__}" in path.parts
    cur = store.cursor()
    try:
        settings = dict(
            cur.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('autoinstall_known_extensions', 'autoload_known_extensions', "
                "'enable_external_access')"
            ).fetchall()
        )
    finally:
        cur.close()
    assert settings == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "enable_external_access": "false",
    }


def test_upkeep_merges_small_files_and_retention_space_comes_back(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    store, other = open_collectors(2)
    now = datetime.now(UTC)
    for day in range(12):  # one commit per day of data: 12 small files
        _append(store, _columns([uuid7_str() for _ in range(50)], now - timedelta(days=day)))
    upkeep = LakeUpkeep(store, keep=timedelta(0))
    before = upkeep.stats()
    # And herald_schema's two versions, and the one label set, written by the first commit.
    assert before.data_files == 12 + 2 + 1
    deleted = store.delete_expired(now - timedelta(days=5, hours=12), {}, 10_000)
    assert deleted == 6 * 50
    report = upkeep.run(datetime.now(UTC) + timedelta(seconds=1))
    assert not report.errors, report.errors
    after = upkeep.stats()
    assert after.data_files < before.data_files
    assert after.delete_files == 0  # the deleted rows were rewritten away
    assert after.files_on_disk == after.data_files  # replaced files were removed from disk
    assert after.snapshots < before.snapshots
    assert store.count_events() == 6 * 50
    # Another collector reads the compacted lake.
    assert other.count_events() == 6 * 50


def test_followers_and_the_leaders_reads_see_every_event_across_compactions(
    open_collectors: Callable[[int], list[LakeStore]],
) -> None:
    """Collector b commits while collector a's tail and the leader's commit-order reads lag
    behind, and upkeep merges the small files in between — twice, so that the second merged
    file begins before what the readers have read. DuckLake's change feed
    (``ducklake_table_changes``) finds a merged file's rows only when the range asked for
    starts at or before the file's first snapshot: the tail used to miss every event of the
    second compaction."""
    a, b = open_collectors(2)
    follower = SnapshotFollower(a, 60.0)  # polled by hand below
    heard: list[str] = []
    follower.add_listener(lambda cols, received: heard.extend(cols.ids))
    follower.start()
    events = LakeAutomationEvents(a)
    read: list[str] = []
    watermark = (0, -1, "00000000-0000-0000-0000-000000000000")

    def read_on() -> None:
        nonlocal watermark
        ids, keys = _reads(events, watermark)
        read.extend(ids)
        if keys:
            watermark = keys[-1]

    upkeep = LakeUpkeep(a, keep=timedelta(hours=1))
    try:
        sent: list[str] = []
        for _ in range(3):  # caught up, then compacted
            sent += _commit_ids(b, 4)
        assert follower.poll() == 12
        read_on()
        upkeep.merge_files()
        for _ in range(3):  # committed after the readers' position, then merged with the old
            sent += _commit_ids(b, 4)
        upkeep.merge_files()
        files = _files_per_table(a)
        assert files["events"] == 1, files  # the events merged into one file
        assert follower.poll() == 12
        read_on()
        assert heard == sent
        assert read == sent
    finally:
        follower.stop()


def _files_per_table(store: LakeStore) -> dict[str, int]:
    cur = store.cursor()
    try:
        rows = cur.execute("SELECT table_name, file_count FROM ducklake_table_info('lake')")
        return {str(name): int(count) for name, count in rows.fetchall()}
    finally:
        cur.close()


def _commit_ids(store: LakeStore, n: int) -> list[str]:
    ids = [uuid7_str() for _ in range(n)]
    assert _append(store, _columns(ids, datetime.now(UTC))) == n
    return ids


def _reads(
    events: LakeAutomationEvents, after: tuple[int, int, str]
) -> tuple[list[str], list[tuple[int, int, str]]]:
    """Every event the leader reads after ``after`` (commit order), with its watermark key."""
    ids: list[str] = []
    keys: list[tuple[int, int, str]] = []
    while True:
        cols, received = events.events_received_since(after, 5)
        for id_, rec, occ in zip(cols.ids, received, cols.occurred_us, strict=True):
            ids.append(id_)
            keys.append((rec, occ, id_))
        if len(cols) < 5:
            return ids, keys
        after = keys[-1]
