"""The DuckDB store: migrations, Arrow inserts, dedupe by id, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from collector.config import StorageConfig
from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.ids import uuid7_str
from collector.store.duckdb_store import EventStore, columns_to_arrow
from collector.store.retention import apply_retention
from collector.store.schema import LATEST

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def batch(*events: tuple[str, str, datetime]) -> EventColumns:
    cols = EventColumns()
    for event_id, name, occurred in events:
        cols.append(
            event_id,
            datetime_to_us(occurred),
            name,
            {"prefect.resource.id": "svc.checkout", "service.name": "checkout"},
            [{"prefect.resource.id": "otel.trace.1", "prefect.resource.role": "trace"}],
            '{"n": 1}',
        )
    return cols


def store_batch(store: EventStore, cols: EventColumns) -> int:
    return store.append(columns_to_arrow(cols, [datetime_to_us(NOW)] * len(cols)))


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    EventStore(path).close()
    EventStore(path).close()
    conn = duckdb.connect(str(path))
    assert conn.execute("SELECT max(version), count(*) FROM herald_schema").fetchone() == (
        LATEST,
        LATEST,
    )


def test_duplicate_ids_are_stored_once(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.duckdb")
    a, b = uuid7_str(), uuid7_str()
    assert store_batch(store, batch((a, "x", NOW), (a, "x", NOW), (b, "y", NOW))) == 2
    assert store_batch(store, batch((a, "x", NOW))) == 0
    assert store.count_events() == 2
    event = store.get_event(a)
    assert event is not None and event.event == "x"
    assert event.resource["service.name"] == "checkout"
    assert event.related[0]["prefect.resource.role"] == "trace"
    assert event.payload == {"n": 1}
    assert event.received == NOW


def test_public_tables_read_naturally_in_sql(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.duckdb")
    store_batch(store, batch((uuid7_str(), "x", NOW)))
    cur = store.cursor()
    assert cur.execute("SELECT resource->>'service.name' FROM events").fetchone() == ("checkout",)
    rows = cur.execute("SELECT role, resource_id FROM event_resources ORDER BY role").fetchall()
    assert rows == [("", "svc.checkout"), ("trace", "otel.trace.1")]


def test_retention_deletes_old_events_with_per_name_overrides(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.duckdb")
    old, older, recent = NOW - timedelta(days=2), NOW - timedelta(days=10), NOW - timedelta(hours=1)
    ids = [uuid7_str() for _ in range(5)]
    store_batch(
        store,
        batch(
            (ids[0], "keep.me", older),
            (ids[1], "noisy", old),
            (ids[2], "noisy", recent),
            (ids[3], "keep.me", recent),
            (ids[4], "other", older),
        ),
    )
    config = StorageConfig(retention_days=7, retention_overrides={"noisy": 1})
    assert apply_retention(store, config, NOW) == 3
    remaining = {
        row[0] for row in store.cursor().execute("SELECT id::VARCHAR FROM events").fetchall()
    }
    assert remaining == {ids[2], ids[3]}
    # resource rows go with their events
    assert store.cursor().execute("SELECT count(*) FROM event_resources").fetchone() == (4,)
