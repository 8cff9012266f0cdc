"""Retention on stores older than ``retention_days``: it finishes promptly, never holds ingest up
for long, and SIGTERM ends the server within its grace time whatever retention is doing (issue 8,
item 2; /work/shared/reference/robustness.md "A store older than retention").

Before the fix, any expired event wedged ``herald serve``: the retention ``CHECKPOINT`` waited
forever — spinning two cores — for a result the migration check had left unread on the store's
main connection, and held the write lock meanwhile, so ingest and SIGTERM hung with it.

The stores are built straight through DuckDB (``EventStore.transaction``), not the API: a
million events in a few seconds, old and new interleaved so every row group holds both.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from collector.app import Herald
from collector.clock import ManualClock
from collector.config import Config
from collector.domain.ids import uuid7_str
from collector.errors import StoreError
from collector.store.duckdb_store import EventStore
from collector.store.retention import RetentionPlan
from collector.store.writer import BatchWriter
from collector.testing import ServedProcess, serve_process, test_config

GRACE = 2.0
# SIGTERM: the grace time, one commit (or one retention slice, or a checkpoint in progress) and
# the interpreter's own exit, on a 2-core machine shared with other test runs.
EXIT_WITHIN = GRACE + 8.0
INGEST_WITHIN = 2.0
RETENTION_DAYS = 7


def build_store(path: Path, *, total: int, old_every: int, now: datetime) -> tuple[int, int]:
    """``total`` events, every ``old_every``-th one 30 days old, the rest an hour old; events
    of both ages interleave in every row group. Returns (old, new) counts."""
    store = EventStore(path)
    try:
        with store.transaction() as cur:
            cur.execute(
                """
                INSERT INTO events (id, occurred, received, event, resource_id, resource,
                                    related, payload, follows)
                SELECT uuid(),
                       CASE WHEN i % $every = 0 THEN $old ELSE $new END - to_microseconds(i),
                       $new, 'aged.event', 'svc.aged', '{"prefect.resource.id":"svc.aged"}',
                       '[]', '{"i":' || i || '}', NULL
                FROM range($total) AS t(i)
                """,
                {
                    "every": old_every,
                    "old": now - timedelta(days=30),
                    "new": now - timedelta(hours=1),
                    "total": total,
                },
            )
    finally:
        store.close()
    old = (total + old_every - 1) // old_every
    return old, total - old


def count_by_age(path: Path, now: datetime) -> tuple[int, int]:
    """(expired, kept) counts of the ``aged.event`` events in the file."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE occurred < $cut), "
            "count(*) FILTER (WHERE occurred >= $cut) FROM events WHERE event = 'aged.event'",
            {"cut": now - timedelta(days=RETENTION_DAYS)},
        ).fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def stored_ids(path: Path, event_like: str) -> set[str]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        rows = conn.execute(
            "SELECT id::VARCHAR FROM events WHERE event LIKE ?", [event_like]
        ).fetchall()
    finally:
        conn.close()
    return {r[0] for r in rows}


def fresh_events(name: str, n: int, occurred: datetime | None = None) -> list[dict[str, Any]]:
    when = (occurred or datetime.now(UTC)).isoformat()
    return [
        {
            "id": uuid7_str(),
            "event": name,
            "occurred": when,
            "resource": {"prefect.resource.id": f"{name}.r"},
            "payload": {"k": i},
        }
        for i in range(n)
    ]


@contextmanager
def herald_serve(db: Path, tmp_path: Path) -> Iterator[ServedProcess]:
    """``herald serve`` as a subprocess on ``db``, ports from the OS, a short grace time."""
    config = tmp_path / "herald.toml"
    config.write_text(
        f'[server]\ngrpc = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
        f"shutdown_grace_seconds = {GRACE}\n"
        f'[storage]\npath = "{db}"\nretention_days = {RETENTION_DAYS}\n'
    )
    with serve_process("--config", str(config)) as served:
        yield served


def timed_ingest(http: str, events: list[dict[str, Any]]) -> float:
    start = time.monotonic()
    resp = httpx.post(f"http://{http}/api/events", content=orjson.dumps(events), timeout=15)
    took = time.monotonic() - start
    assert resp.status_code == 204, resp.text
    return took


def test_store_with_every_event_past_retention_serves_at_once_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "aged.duckdb"
    old, _ = build_store(db, total=20_000, old_every=1, now=now)
    assert count_by_age(db, now) == (old, 0)
    first, second = fresh_events("fresh.first", 100), fresh_events("fresh.second", 100)
    with herald_serve(db, tmp_path) as served:
        assert timed_ingest(served.http, first) < INGEST_WITHIN
        served.wait_for_log(rf"retention deleted {old} events", within=30)
        assert timed_ingest(served.http, second) < INGEST_WITHIN
        assert served.sigterm(EXIT_WITHIN + 30) < EXIT_WITHIN
    assert count_by_age(db, now) == (0, 0)
    assert stored_ids(db, "fresh.%") == {e["id"] for e in first + second}


@pytest.mark.slow
def test_million_event_store_mixing_old_and_new_restarts_trims_and_stops_promptly(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "million.duckdb"
    old, new = build_store(db, total=1_000_000, old_every=2, now=now)
    ingested: list[dict[str, Any]] = []
    with herald_serve(db, tmp_path) as served:
        batch = fresh_events("fresh.during", 500)
        assert timed_ingest(served.http, batch) < INGEST_WITHIN
        ingested += batch
        served.wait_for_log(rf"retention deleted {old} events", within=60)
        batch = fresh_events("fresh.after", 500)
        assert timed_ingest(served.http, batch) < INGEST_WITHIN
        ingested += batch
        assert served.sigterm(EXIT_WITHIN + 30) < EXIT_WITHIN
    assert count_by_age(db, now) == (0, new)
    assert stored_ids(db, "fresh.%") == {e["id"] for e in ingested}
    # Restarted on the trimmed file: nothing left to delete, ingest and SIGTERM as usual.
    with herald_serve(db, tmp_path) as served:
        assert timed_ingest(served.http, fresh_events("fresh.restart", 100)) < INGEST_WITHIN
        assert served.sigterm(EXIT_WITHIN + 30) < EXIT_WITHIN
    assert count_by_age(db, now) == (0, new)


@pytest.mark.slow
def test_sigterm_in_the_middle_of_retention_exits_within_grace(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "midway.duckdb"
    old, new = build_store(db, total=1_000_000, old_every=2, now=now)
    with herald_serve(db, tmp_path) as served:
        # Retention starts with the server; SIGTERM lands while its slices are running.
        assert served.sigterm(EXIT_WITHIN + 30) < EXIT_WITHIN
    expired, kept = count_by_age(db, now)
    assert kept == new and expired <= old  # nothing new lost; the rest goes at the next start


# -- in-process server with an injected clock -------------------------------------------------


@contextmanager
def running_with_clock(config: Config, clock: ManualClock) -> Iterator[tuple[Herald, Any]]:
    """A started ``Herald(config, clock=clock)`` on its own event loop thread."""
    loop = asyncio.new_event_loop()
    herald = Herald(config, clock=clock)
    thread = threading.Thread(target=loop.run_forever, name="retention-test-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(herald.start(), loop).result(timeout=30)
        yield herald, loop
    finally:
        asyncio.run_coroutine_threadsafe(herald.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def count_live(herald: Herald, sql: str) -> int:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        row = cur.execute(sql).fetchone()
    finally:
        cur.close()
    assert row is not None
    return int(row[0])


def poll(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {within}s")


def test_clock_moved_past_the_boundary_while_serving_deletes_what_became_old(
    tmp_path: Path,
) -> None:
    start = datetime.now(UTC)
    clock = ManualClock(start)
    config = test_config(
        tmp_path / "clock.duckdb",
        storage={"retention_days": RETENTION_DAYS, "retention_interval_seconds": 0.2},
    )
    aging = fresh_events("clock.aging", 50, occurred=start - timedelta(days=6))
    young = fresh_events("clock.young", 50, occurred=start - timedelta(hours=1))
    with running_with_clock(config, clock) as (herald, _):
        for batch in (aging, young):
            resp = httpx.post(
                f"http://{herald.http_address}/api/events", content=orjson.dumps(batch)
            )
            assert resp.status_code == 204, resp.text
        time.sleep(0.6)  # several retention passes at the old time: nothing is expired yet
        assert count_live(herald, "SELECT count(*) FROM events") == 100
        clock.advance(timedelta(days=2).total_seconds())  # the 6-day-old ones are now 8
        poll(
            lambda: (
                count_live(herald, "SELECT count(*) FROM events WHERE event = 'clock.aging'") == 0
            ),
            within=10,
            what="retention after the clock moved",
        )
        ids = count_live(herald, "SELECT count(*) FROM events WHERE event = 'clock.young'")
        assert ids == 50


def test_retention_firing_under_ingest_load_loses_and_fails_nothing(tmp_path: Path) -> None:
    start = datetime.now(UTC)
    db = tmp_path / "load.duckdb"
    # 300k events that are 6.5 days old at the clock's start: not expired until it moves.
    store = EventStore(db)
    with store.transaction() as cur:
        cur.execute(
            """
            INSERT INTO events (id, occurred, received, event, resource_id, resource,
                                related, payload, follows)
            SELECT uuid(), $occurred - to_microseconds(i), $occurred, 'aged.event', 'svc.aged',
                   '{"prefect.resource.id":"svc.aged"}', '[]', '{}', NULL
            FROM range(300000) AS t(i)
            """,
            {"occurred": start - timedelta(days=6, hours=12)},
        )
    store.close()
    clock = ManualClock(start)
    config = test_config(
        db, storage={"retention_days": RETENTION_DAYS, "retention_interval_seconds": 0.1}
    )
    failures: list[str] = []
    acked: list[set[str]] = []
    latencies: list[float] = []
    stop = threading.Event()

    def client(http: str) -> None:
        mine: set[str] = set()
        acked.append(mine)
        with httpx.Client(base_url=f"http://{http}", timeout=60) as c:
            while not stop.is_set():
                batch = fresh_events("load.fresh", 50)
                t0 = time.monotonic()
                resp = c.post("/api/events", content=orjson.dumps(batch))
                latencies.append(time.monotonic() - t0)
                if resp.status_code == 204:
                    mine.update(e["id"] for e in batch)
                else:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")

    with running_with_clock(config, clock) as (herald, _):
        threads = [threading.Thread(target=client, args=(herald.http_address,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            poll(lambda: sum(len(a) for a in acked) > 2_000, within=20, what="load running")
            clock.advance(timedelta(days=1).total_seconds())  # the 300k expire now, under load
            poll(
                lambda: (
                    count_live(herald, "SELECT count(*) FROM events WHERE event = 'aged.event'")
                    == 0
                ),
                within=30,
                what="retention under load",
            )
            time.sleep(0.5)  # keep the load on past the last slice
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert failures == []
    assert latencies and max(latencies) < INGEST_WITHIN, max(latencies)
    everything = set().union(*acked)
    assert stored_ids(db, "load.fresh") == everything


def test_reader_left_open_holds_up_neither_retention_nor_ingest_nor_stop(tmp_path: Path) -> None:
    # The shape of the original wedge: a query in flight (here a result read only in part)
    # while retention deletes. A checkpoint would wait for it with the whole store stopped, so
    # the store must not start one while the reader is open.
    start = datetime.now(UTC)
    clock = ManualClock(start)
    db = tmp_path / "reader.duckdb"
    build_store(db, total=200_000, old_every=2, now=start)
    config = test_config(
        db, storage={"retention_days": RETENTION_DAYS, "retention_interval_seconds": 0.2}
    )
    with running_with_clock(config, clock) as (herald, _):
        poll(
            lambda: (
                count_live(herald, "SELECT count(*) FROM events WHERE event = 'aged.event'")
                == 100_000
            ),
            within=30,
            what="the first retention pass",
        )
        assert herald.store is not None
        reader = herald.store.cursor()
        reader.execute("SELECT * FROM events")
        assert reader.fetchone() is not None  # a result in flight, not read to its end
        try:
            clock.advance(timedelta(days=30).total_seconds())  # everything expires now
            poll(
                lambda: count_live(herald, "SELECT count(*) FROM events") == 0,
                within=30,
                what="retention with a reader open",
            )
            clock.set(start)  # so that the events sent next are young again
            time.sleep(2.5)  # past the writer's idle tick: it would checkpoint now
            for _ in range(3):
                start_post = time.monotonic()
                resp = httpx.post(
                    f"http://{herald.http_address}/api/events",
                    content=orjson.dumps(fresh_events("reader.fresh", 50)),
                    timeout=15,
                )
                assert resp.status_code == 204, resp.text
                assert time.monotonic() - start_post < INGEST_WITHIN
        finally:
            reader.close()
        assert count_live(herald, "SELECT count(*) FROM events") == 150


def test_sigterm_under_ingest_load_exits_within_grace_and_keeps_every_acknowledged_event(
    tmp_path: Path,
) -> None:
    db = tmp_path / "busy.duckdb"
    acked: list[set[str]] = []
    stop = threading.Event()

    def client(http: str) -> None:
        mine: set[str] = set()
        acked.append(mine)
        with httpx.Client(base_url=f"http://{http}", timeout=30) as c:
            while not stop.is_set():
                batch = fresh_events("busy.fresh", 100)
                try:
                    resp = c.post("/api/events", content=orjson.dumps(batch))
                except httpx.HTTPError:
                    return  # the server went away: this batch was not acknowledged
                if resp.status_code == 204:
                    mine.update(e["id"] for e in batch)

    with herald_serve(db, tmp_path) as served:
        threads = [threading.Thread(target=client, args=(served.http,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            poll(lambda: sum(len(a) for a in acked) > 5_000, within=30, what="load running")
            assert served.sigterm(EXIT_WITHIN + 30) < EXIT_WITHIN
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    everything = set().union(*acked)
    assert everything and stored_ids(db, "busy.fresh") >= everything


def test_retention_slices_honour_overrides_longer_and_shorter_than_the_default(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    store = EventStore(tmp_path / "overrides.duckdb")
    ages = {"audit": (20, 40), "noisy": (0.5, 2), "plain": (3, 10)}  # kept age, expired age (days)
    with store.transaction() as cur:
        for name, (young, old) in ages.items():
            for days in (young, old):
                cur.execute(
                    """
                    INSERT INTO events (id, occurred, received, event, resource_id, resource,
                                        related, payload, follows)
                    SELECT uuid(), $occurred - to_microseconds(i), $occurred, $name, 'r',
                           '{"prefect.resource.id":"r"}', '[]', '{}', NULL
                    FROM range(25) AS t(i)
                    """,
                    {"occurred": now - timedelta(days=days), "name": name},
                )
    config = test_config(
        tmp_path / "unused.duckdb",
        storage={"retention_days": 7, "retention_overrides": {"audit": 30, "noisy": 1}},
    ).storage
    plan = RetentionPlan.at(config, now, slice_rows=7)  # many slices, the last one partial
    slices = []
    while True:
        slices.append(plan.delete_slice(store))
        if slices[-1] < plan.slice_rows:
            break
    assert sum(slices) == 75 and max(slices) == 7
    rows = store.cursor().execute("SELECT event, count(*) FROM events GROUP BY event").fetchall()
    assert dict(rows) == {"audit": 25, "noisy": 25, "plain": 25}
    assert store.checkpoint()  # no reader open: the space comes back now
    store.close()


def test_retention_slices_waiting_at_stop_end_cleanly(tmp_path: Path) -> None:
    # A SIGTERM mid-retention cancels the pass: slices still queued on the writer are dropped,
    # whether their caller already gave up (cancelled) or still waits (told: shutting down).
    store = EventStore(tmp_path / "jobs.duckdb")
    writer = BatchWriter(store, batch_max_events=10, queue_max_events=100)
    writer.start()
    thread_errors: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: thread_errors.append(args.exc_value)
    try:
        release, started = threading.Event(), threading.Event()

        def hold() -> bool:
            started.set()
            return release.wait()

        running = writer.call(hold)  # keeps the writer busy while the others queue
        # The writer must have taken the first job before stop; otherwise it is dropped too.
        assert started.wait(timeout=5)
        cancelled, waiting = writer.call(lambda: 1), writer.call(lambda: 2)
        assert cancelled.cancel()
        stopper = threading.Thread(target=writer.stop)
        stopper.start()
        poll(lambda: writer._stopping, within=5, what="stop requested")
        release.set()
        stopper.join(timeout=10)
        assert not stopper.is_alive()
        assert running.result(timeout=1) is True
        assert isinstance(waiting.exception(timeout=1), StoreError)
    finally:
        threading.excepthook = previous
        store.close()
    assert thread_errors == []
