"""Collectors (real servers, in this process) on one DuckLake with a real PostgreSQL catalog,
as a load balancer would use them: events sent to one are read through the other — feed, one
event, SQL — and the other's live tail shows them within about a second; the leader's upkeep
and retention loops keep the lake compact and within its retention."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.ids import uuid7_str
from collector.store.lake.lake_store import LAKE, LakeStore
from collector.testing import PostgresServer, running_herald, test_config, wait_for


@pytest.fixture
def two_collectors(postgres: PostgresServer, tmp_path: Path) -> Iterator[list[Herald]]:
    storage = {
        "backend": "ducklake",
        "catalog": postgres.catalog(postgres.create_database()),
        "data_path": str(tmp_path / "lake"),
        "lake_follow_interval_seconds": 0.1,
    }
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_herald(
                    test_config(
                        tmp_path / f"c{i}.duckdb",
                        storage=storage,
                        automations={"enabled": False},
                    )
                )
            )
            for i in range(2)
        ]
        yield servers


def _events(n: int, name: str) -> list[dict[str, Any]]:
    return [
        {
            "id": uuid7_str(),
            "occurred": datetime.now(UTC).isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": f"svc.{i % 2}"},
            "payload": {"i": i},
        }
        for i in range(n)
    ]


def test_events_sent_to_one_collector_are_read_and_tailed_through_the_other(
    two_collectors: list[Herald],
) -> None:
    a, b = two_collectors
    with HeraldClient(a.grpc_address) as to_a, HeraldClient(b.grpc_address) as to_b:
        tailed: queue.Queue[dict[str, Any]] = queue.Queue()
        stream = to_b.tail({"event": {"prefix": ["lake."]}}, backfill=False)

        def drain() -> None:
            for kind, item in stream:
                if kind == "event":
                    tailed.put(item)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        # The tail is open once an event committed on b itself reaches it.
        wait_for(
            lambda: to_b.emit(_events(1, "lake.b"))[0] and _get(tailed, 0.5),
            timeout=15,
            what="b's tail to open",
        )
        sent = _events(20, "lake.a")
        started = time.monotonic()
        accepted, errors = to_a.emit(sent)
        assert (accepted, errors) == (20, [])
        seen: set[str] = set()
        wait_for(
            lambda: _collect(tailed, seen, {e["id"] for e in sent}),
            timeout=15,
            what="a's events on b's live tail",
        )
        lag = time.monotonic() - started
        assert lag < 10  # ~0.1 s poll + a catalog round trip; generous for a busy machine

        page = to_b.query({"event": {"prefix": ["lake.a"]}}, limit=50)
        assert page["total"] == 20
        assert {e["id"] for e in page["events"]} == {e["id"] for e in sent}
        assert to_b.get(sent[0]["id"])["event"] == "lake.a"
        answer = to_b.sql("SELECT count(*) AS n FROM events WHERE event LIKE 'lake.%'")
        assert answer.table.to_pylist()[0]["n"] >= 21
        # The same events re-sent to b (a client retrying through the load balancer).
        assert to_b.emit(sent) == (20, [])
        assert to_a.query({"event": {"prefix": ["lake.a"]}}, limit=50)["total"] == 20


def _get(q: queue.Queue[dict[str, Any]], timeout: float) -> dict[str, Any] | None:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


def _collect(q: queue.Queue[dict[str, Any]], seen: set[str], wanted: set[str]) -> bool:
    while (item := _get(q, 0.05)) is not None:
        seen.add(item["id"])
    return wanted <= seen


def test_the_leader_compacts_the_lake_and_applies_retention(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """One collector (the leader of its cluster of one): its upkeep loop merges the small
    files of many commits and its retention loop deletes expired events from the lake. (The
    replaced files stay on disk for lake_snapshot_keep_seconds: a read in flight may still
    be reading them — with no keep window at all, such reads fail.)"""
    storage = {
        "backend": "ducklake",
        "catalog": postgres.catalog(postgres.create_database()),
        "data_path": str(tmp_path / "lake"),
        "lake_upkeep_interval_seconds": 0.5,
        "retention_days": 7,
        "retention_interval_seconds": 0.5,
    }
    config = test_config(tmp_path / "c.duckdb", storage=storage, automations={"enabled": False})
    with running_herald(config) as server, HeraldClient(server.grpc_address) as client:
        old = _events(5, "lake.old")
        for e in old:
            e["occurred"] = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        assert client.emit(old) == (5, [])
        for _ in range(8):  # eight group commits: eight small files
            assert client.emit(_events(10, "lake.new")) == (10, [])
        assert isinstance(server.store, LakeStore)
        wait_for(
            lambda: client.query({"event": {"prefix": ["lake.old"]}}, limit=10)["total"] == 0,
            timeout=30,
            what="retention deleting the 30-day-old events",
        )
        store = server.store

        def events_files() -> int:
            # The events' own files (the lake's other tables have theirs: herald_schema one
            # per schema version, herald_label_sets).
            cur = store.cursor()
            try:
                row = cur.execute(
                    f"SELECT file_count FROM ducklake_table_info('{LAKE}') "
                    "WHERE table_name = 'events'"
                ).fetchone()
            finally:
                cur.close()
            assert row is not None
            return int(row[0])

        wait_for(lambda: events_files() == 1, timeout=30, what="upkeep merging the small files")
        assert client.query({"event": {"prefix": ["lake.new"]}}, limit=100)["total"] == 80
