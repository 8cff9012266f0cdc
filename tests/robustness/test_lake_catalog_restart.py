"""The lake's PostgreSQL catalog restarted under ingest (a failover, an upgrade, a crash): every
connection a collector holds to it drops at once. Commits must be retried like commit
conflicts — opening the commit's cursor used to fail with ``StoreError`` ("the lake is not
available: … server closed the connection unexpectedly"), which was not retried, so the batch
being committed failed its requests with 503 although the catalog was back 0.2 s later. A
catalog that stays away is a clear error after the same bounded retries.

A PostgreSQL server of its own (restarted and stopped here), not the session's."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.ids import uuid7_str
from collector.errors import StoreError
from collector.store.duckdb_store import columns_to_arrow
from collector.store.lake import lake_store
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.testing import (
    REQUIRE_POSTGRES_ENV,
    PostgresServer,
    PostgresUnavailable,
    postgres_bin_dir,
    postgres_server,
)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    try:
        postgres_bin_dir()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            raise
        pytest.skip(str(exc))
    with postgres_server() as server:
        yield server


def _batch(n: int) -> tuple[list[str], EventColumns]:
    ids = [uuid7_str() for _ in range(n)]
    cols = EventColumns()
    for event_id in ids:
        now = datetime_to_us(datetime.now(UTC))
        cols.append(event_id, now, "restart.test", {"prefect.resource.id": "r"}, [], "{}")
    return ids, cols


def _append(store: LakeStore, cols: EventColumns) -> int:
    return store.append(columns_to_arrow(cols, [datetime_to_us(datetime.now(UTC))] * len(cols)))


def test_commits_ride_through_a_catalog_restart_and_fail_clearly_when_it_stays_away(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    # A password in the connection string (trust authentication ignores it) must never
    # reach an error message.
    catalog = own_postgres.catalog(own_postgres.create_database()) + " password=s3cret-pw"
    location = LakeLocation.parse(catalog, str(tmp_path / "lake"))
    store = LakeStore(location)
    try:
        # Idle while the catalog restarts: the next commit finds its connections dead.
        assert _append(store, _batch(5)[1]) == 5
        own_postgres.restart()
        assert _append(store, _batch(5)[1]) == 5

        acknowledged: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def ingest() -> None:
            while not stop.is_set():
                ids, cols = _batch(10)
                try:
                    # A restart between COMMIT and its answer leaves the outcome unknown: the
                    # retry finds the rows already there (0 new). The count below checks
                    # that every acknowledged event is there, once.
                    assert _append(store, cols) in (0, 10)
                except BaseException as exc:
                    errors.append(exc)
                    return
                acknowledged.extend(ids)

        writer = threading.Thread(target=ingest)
        writer.start()
        try:
            for _ in range(2):  # restarted twice, each while commits run
                seen = len(acknowledged)
                deadline = time.monotonic() + 30
                while len(acknowledged) < seen + 30 and not errors:
                    assert time.monotonic() < deadline, "no commits before the restart"
                    time.sleep(0.01)
                own_postgres.restart()
            seen = len(acknowledged)
            deadline = time.monotonic() + 30
            while len(acknowledged) < seen + 30 and not errors:  # commits go on after it
                assert time.monotonic() < deadline, "no commits after the restart"
                time.sleep(0.01)
        finally:
            stop.set()
            writer.join(60)
        assert errors == []
        # Every acknowledged event is there, once.
        assert store.count_events() == 10 + len(acknowledged)

        # A catalog that stays away: a clear error once the retries are used up.
        own_postgres.stop()
        started = time.monotonic()
        with pytest.raises(StoreError, match="lake commit failed after 6 attempts") as refused:
            _append(store, _batch(3)[1])
        assert location.describe() in str(refused.value)
        assert "s3cret-pw" not in str(refused.value)
        assert time.monotonic() - started < 30
    finally:
        store.close()


def test_a_commit_is_not_retried_when_only_the_lock_release_fails(
    own_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The catalog went away between the events' COMMIT and the release of the commit lock
    # (seen in CI as a PostgreSQL restart landing there): the events are committed, and
    # PostgreSQL frees a transaction-level lock with the connection that held it. Failing the
    # append then retried a commit already made — its rows found themselves and counted 0.
    dbname = own_postgres.create_database()
    store = LakeStore(LakeLocation.parse(own_postgres.catalog(dbname), str(tmp_path / "lake")))
    original = getattr(lake_store, "insert_batch")  # noqa: B009  # not in its __all__

    def insert_then_drop_the_lock_holder(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        own_postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted",
            dbname,
        )
        return result

    try:
        monkeypatch.setattr(lake_store, "insert_batch", insert_then_drop_the_lock_holder)
        assert _append(store, _batch(10)[1]) == 10
        monkeypatch.setattr(lake_store, "insert_batch", original)
        # The lock connection is reopened for the next commit.
        assert _append(store, _batch(5)[1]) == 5
        assert store.count_events() == 15
    finally:
        store.close()
