"""The filters' keys (``events.resource_key`` with ``herald_label_sets``, and
``events.related_id_keys``/``related_pair_keys``; ``schema.py`` version 3) never drift from the
events' JSON, on both backends.

A randomized store is written through the real insert path — with re-sent events whose labels
and related items differ from the stored ones, new and re-sent events in one batch, ids repeated
inside a batch, retention slices with a per-name override, and ids sent again after retention
deleted them — then every label, related and any-resource filter drawn at random selects,
through the keys, exactly the events the domain's ``includes()`` accepts (the JSON-walking twin
of the SQL, tests/unit/test_filters.py), and the label sets and key columns hold exactly what the
stored JSON says (recomputed here item by item). A store written at schema version 2 (a lake at
its version 1) is migrated and backfilled the same way.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.filters import parse_filter
from collector.store.duckdb_store import EVENT_COLUMNS, EventStore, columns_to_arrow, row_to_event
from collector.store.filter_sql import filter_sql
from collector.store.lake import extensions
from collector.store.lake.lake_schema import LAKE_MIGRATIONS
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.store.schema import MIGRATIONS

Store = EventStore | LakeStore

NOW = datetime.now(UTC).replace(microsecond=0)
REGIONS = ["eu", "us", "ap", "é-ü", 'q"uote', "back\\slash"]
ROLES = ["tenant", "customer", "flow", "tag"]
TIERS = ["gold", "silver"]


def _resource(rng: random.Random) -> dict[str, str]:
    labels = {"prefect.resource.id": f"app.svc.{rng.randrange(6)}"}
    if rng.random() < 0.8:
        labels["region"] = rng.choice(REGIONS)
    if rng.random() < 0.5:
        labels["env"] = rng.choice(["prod", "dev"])
    if rng.random() < 0.3:
        labels["version"] = f"1.{rng.randrange(40)}"  # many distinct label sets
    return labels


def _related(rng: random.Random) -> list[dict[str, str]]:
    items = []
    for _ in range(rng.randrange(4)):
        role = rng.choice(ROLES)
        item = {"prefect.resource.id": f"app.{role}.{rng.randrange(5)}"}
        if rng.random() < 0.9:  # an item without a role is stored as such
            item["prefect.resource.role"] = role
        if rng.random() < 0.3:
            item["tier"] = rng.choice(TIERS)
        items.append(item)
    return items


def _batch(rng: random.Random, ids: list[tuple[str, int]]) -> EventColumns:
    """Events with these (id, occurred µs), labels and related items drawn from ``rng``."""
    cols = EventColumns()
    for event_id, occurred_us in ids:
        name = rng.choice(["app.order.created", "app.order.paid", "otel.span.ok"])
        cols.append(event_id, occurred_us, name, _resource(rng), _related(rng), "{}")
    return cols


def _append(store: Store, cols: EventColumns) -> int:
    return store.append(columns_to_arrow(cols, [datetime_to_us(NOW)] * len(cols)))


def _new_ids(rng: random.Random, n: int) -> list[tuple[str, int]]:
    """``n`` fresh ids, occurring over the 10 days before NOW."""
    span = timedelta(days=10) // timedelta(microseconds=1)
    now_us = datetime_to_us(NOW)
    return [
        (str(uuid.UUID(int=rng.getrandbits(128), version=4)), now_us - rng.randrange(span))
        for _ in range(n)
    ]


def _write_history(store: Store, rng: random.Random) -> None:
    """Batches, re-sent events with other contents, repeated ids, retention, ids re-used."""
    sent: list[tuple[str, int]] = []
    for _ in range(6):
        ids = _new_ids(rng, 60)
        _append(store, _batch(rng, ids))
        sent += ids
    # Re-sent: the same ids and times, other labels and related items (all skipped).
    resent = rng.sample(sent, 80)
    assert _append(store, _batch(rng, resent)) == 0
    # New and re-sent events in one batch: only the new ones are stored.
    mixed = _new_ids(rng, 25)
    assert _append(store, _batch(rng, rng.sample(sent, 25) + mixed)) == 25
    sent += mixed
    # Repeated inside one batch: only the first of each id is stored, side rows included.
    fresh = _new_ids(rng, 30)
    assert _append(store, _batch(rng, fresh + fresh[:10] + fresh[5:15])) == 30
    sent += fresh
    # Retention in small slices, with an override; then ids it deleted come back, changed.
    cutoff = NOW - timedelta(days=6)
    overrides = {"otel.span.ok": NOW - timedelta(days=3)}
    while store.delete_expired(cutoff, overrides, 17) == 17:
        pass
    expired = [(i, t) for i, t in sent if t < datetime_to_us(NOW - timedelta(days=6))]
    assert expired
    back = rng.sample(expired, min(20, len(expired)))
    assert _append(store, _batch(rng, back)) == len(back)


def _random_filter(rng: random.Random) -> dict[str, Any]:
    region: Any = rng.choice(
        [rng.choice(REGIONS), rng.sample(REGIONS, 2), "e*", "!eu", ["!us", "ap"], "*u*"]
    )
    role = rng.choice(ROLES)
    related_id = f"app.{role}.{rng.randrange(5)}"
    choices: list[dict[str, Any]] = [
        {"resource": {"labels": {"region": region}}},
        {"resource": {"labels": {"region": region, "env": rng.choice(["prod", "dev"])}}},
        {
            "resource": {
                "labels": {"prefect.resource.id": f"app.svc.{rng.randrange(6)}", "region": region}
            }
        },
        {"event": {"prefix": ["app.order."]}, "resource": {"labels": {"region": region}}},
        {"related": {"id": [related_id]}},
        {"related": {"role": [role]}},
        {"related": {"id": [related_id, f"app.{role}.{rng.randrange(5)}"], "role": [role]}},
        {"related": {"resources_in_roles": [[related_id, role], ["app.tag.1", "tag"]]}},
        {"related": {"id": [related_id], "labels": {"tier": rng.choice(TIERS)}}},
        {"related": {"labels": {"tier": rng.choice(TIERS)}}},
        {"any_resource": {"labels": {"region": region}}},
        {"any_resource": {"id": [related_id]}},
    ]
    return rng.choice(choices)


def _check_filters(store: Store, rng: random.Random, rounds: int = 60) -> None:
    """Random filters select through the side tables what ``includes()`` accepts."""
    cur = store.cursor()
    try:
        events = [
            row_to_event(r) for r in cur.execute(f"SELECT {EVENT_COLUMNS} FROM events").fetchall()
        ]
        assert len(events) > 100
        for _ in range(rounds):
            data = _random_filter(rng)
            flt = parse_filter(data).resolve(NOW + timedelta(minutes=1))
            expected = {str(e.id) for e in events if flt.includes(e)}
            for label_sets in (True, False):  # through the label sets, or the events' JSON
                where, params = filter_sql(flt, label_sets=label_sets)
                sql = f"SELECT e.id FROM events e WHERE {where}"
                got = {str(r[0]) for r in cur.execute(sql, params).fetchall()}
                assert got == expected, (data, label_sets)
    finally:
        cur.close()


def _check_side_tables(store: Store) -> None:
    """The label sets and the events' key columns say exactly what the stored JSON says."""
    cur = store.cursor()
    try:
        stray = cur.execute(
            "SELECT count(*) FROM events e WHERE e.resource_key IS NULL OR NOT EXISTS ("
            "SELECT 1 FROM herald_label_sets s WHERE s.key = e.resource_key "
            "AND s.resource::VARCHAR = e.resource::VARCHAR)"
        ).fetchone()
        assert stray == (0,)
        # Recomputed item by item from the JSON (not by the SQL the insert runs).
        rows = cur.execute(
            "SELECT related::VARCHAR, related_id_keys, related_pair_keys FROM events"
        ).fetchall()
        texts = sorted(
            {
                t
                for related, _, _ in rows
                for item in orjson.loads(related)
                for t in _key_texts(item)
            }
        )
        hashes: dict[str | None, int] = dict(
            cur.execute("SELECT t, hash(t) FROM unnest(?::VARCHAR[]) AS u(t)", [texts]).fetchall()
        )
        null = cur.execute("SELECT hash(NULL::VARCHAR)").fetchone()
        assert null is not None
        hashes[None] = null[0]  # a missing id or role
        for related, id_keys, pair_keys in rows:
            items = orjson.loads(related)
            if not items:
                assert id_keys is None and pair_keys is None
                continue
            assert id_keys == [hashes[item.get("prefect.resource.id")] for item in items]
            assert pair_keys == [hashes[_pair_text(item)] for item in items]
    finally:
        cur.close()


def _pair_text(item: dict[str, str]) -> str | None:
    role, rid = item.get("prefect.resource.role"), item.get("prefect.resource.id")
    return None if role is None or rid is None else f"{len(role)}:{role}{rid}"


def _key_texts(item: dict[str, str]) -> list[str]:
    return [t for t in (item.get("prefect.resource.id"), _pair_text(item)) if t is not None]


@pytest.fixture(params=["duckdb", "ducklake"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "duckdb":
        opened = EventStore(tmp_path / "s.duckdb")
    else:
        location = LakeLocation.parse(f"duckdb:{tmp_path / 'catalog.ducklake'}", str(tmp_path))
        opened = LakeStore(location)
    try:
        yield opened
    finally:
        opened.close()


def test_side_tables_follow_ingest_dedupe_and_retention(store: Store) -> None:
    rng = random.Random(1313)
    _write_history(store, rng)
    _check_side_tables(store)
    _check_filters(store, rng)


def test_retention_prunes_label_sets_nothing_refers_to(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.duckdb")
    try:
        old = datetime_to_us(NOW - timedelta(days=30))
        cols = EventColumns()
        cols.append(
            str(uuid.uuid4()), old, "app.gone", {"prefect.resource.id": "app.gone"}, [], "{}"
        )
        cols.append(
            str(uuid.uuid4()), old, "app.kept", {"prefect.resource.id": "app.kept"}, [], "{}"
        )
        _append(store, cols)
        cur = store.cursor()
        # Written before the prune's age limit (an hour), as a set of an old store would be.
        cur.execute("UPDATE herald_label_sets SET added = added - INTERVAL 2 HOUR")
        cur.close()
        # The override keeps app.kept; app.gone goes, and with it the label set only it had.
        overrides = {"app.kept": NOW - timedelta(days=60)}
        assert store.delete_expired(NOW - timedelta(days=7), overrides, 100) == 1
        cur = store.cursor()
        left = cur.execute("SELECT resource->>'prefect.resource.id' FROM herald_label_sets")
        assert [r[0] for r in left.fetchall()] == ["app.kept"]
        cur.close()
        _check_side_tables(store)
    finally:
        store.close()


def _version_2_file(path: Path, rng: random.Random) -> None:
    """A store as Herald wrote it before the side tables: schema versions 1 and 2, events."""
    conn = duckdb.connect(str(path))
    try:
        conn.execute(
            "CREATE TABLE herald_schema (version INTEGER NOT NULL, "
            "applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, statements in MIGRATIONS[:2]:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO herald_schema (version) VALUES (?)", [version])
        _insert_version_1_events(conn, rng)
    finally:
        conn.close()


def _insert_version_1_events(conn: duckdb.DuckDBPyConnection, rng: random.Random) -> None:
    # The insert of those versions: the nine columns of events version 1.
    for _ in range(4):
        batch = columns_to_arrow(_batch(rng, _new_ids(rng, 80)), [datetime_to_us(NOW)] * 80)
        conn.register("batch", batch)
        conn.execute(
            "INSERT INTO events SELECT id::UUID, occurred, received, event, resource_id, "
            "resource, related, payload, follows::UUID FROM batch"
        )
        conn.unregister("batch")


def test_a_version_2_store_is_migrated_and_backfilled(tmp_path: Path) -> None:
    rng = random.Random(2)
    path = tmp_path / "old.duckdb"
    _version_2_file(path, rng)
    store = EventStore(path)
    try:
        cur = store.cursor()
        assert cur.execute("SELECT max(version) FROM herald_schema").fetchone() == (
            MIGRATIONS[-1][0],
        )
        cur.close()
        _check_side_tables(store)
        _check_filters(store, rng, rounds=30)
        _write_history(store, rng)  # and the migrated store goes on as a new one
        _check_side_tables(store)
    finally:
        store.close()


def test_a_version_1_lake_is_migrated_and_backfilled(tmp_path: Path) -> None:
    rng = random.Random(3)
    catalog = tmp_path / "catalog.ducklake"
    conn = duckdb.connect(":memory:")
    try:
        extensions.load(conn, "ducklake")
        conn.execute(f"ATTACH 'ducklake:{catalog}' AS lake (DATA_PATH '{tmp_path}/')")
        conn.execute("USE lake")
        conn.execute(
            "CREATE TABLE herald_schema (version INTEGER NOT NULL, applied TIMESTAMPTZ NOT NULL)"
        )
        for sql in LAKE_MIGRATIONS[0][1]:
            conn.execute(sql)
        conn.execute("INSERT INTO herald_schema VALUES (1, now())")
        _insert_version_1_events(conn, rng)
    finally:
        conn.close()
    store = LakeStore(LakeLocation.parse(f"duckdb:{catalog}", str(tmp_path)))
    try:
        _check_side_tables(store)
        _check_filters(store, rng, rounds=30)
    finally:
        store.close()
