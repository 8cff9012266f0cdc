"""The store's DDL as ordered migrations; nothing else issues DDL.

Public tables (a contract users query with ``herald sql``): ``events``, ``event_resources``
(a view: one row per involved resource, role ``''`` for the primary), ``automations``,
``automation_firings``, ``action_runs`` and ``automation_state``. Label access reads
naturally: ``resource['service.name']``. Tables named ``herald_…`` are Herald's own bookkeeping
(applied versions, the filters' side tables), not part of the contract.
"""

from __future__ import annotations

import duckdb

# Version 3 (issue 13): what lets a label or related-resource filter skip the JSON of events.
# * ``events.resource_key`` is ``hash()`` of the ``resource`` JSON text; ``herald_label_sets``
#   holds each distinct label set (more than once is harmless) under that key, so a label filter
#   tests the small table and semi-joins ``events`` on the integer.
# * ``events.related_id_keys`` / ``related_pair_keys``: per related item, ``hash()`` of its id,
#   and of its role and id together (``PAIR_KEY_SQL``), so a related filter on ids and roles is
#   a ``list_contains`` over integers. In ``events`` itself rather than a side table with a row
#   per item: the same scan at query time, and no second statement per commit — measured per
#   1,000-event commit (CPU, loaded machine): 7.6 ms without either, 10.1 ms with the lists,
#   15.2 ms with a side table (its own Arrow scan and JSON parse); dedupe and retention need
#   nothing more. NULL when the event has no related resources.
# All are written by the insert (``duckdb_store.INSERT_SQL``). A 64-bit key shared by two
# different texts would make a filter match both (about n/2^64 for a filter value among n
# distinct ones). Internal: ``herald_`` tables and ``*_key(s)`` columns are not part of the
# SQL contract (docs/sql.md). The statements here backfill them for the events stored.
SIDE_TABLES_VERSION = 3
LABEL_SETS_DDL = """
CREATE TABLE herald_label_sets (
    key UBIGINT NOT NULL,
    resource JSON NOT NULL,
    added TIMESTAMPTZ NOT NULL
)
"""
# The related items of ``related`` with the two labels the keys need: json_transform reads them
# ~10x faster than casting the list to JSON[] (1.4 s vs 16 s per 1M events in the backfill).
RELATED_ITEMS_SQL = (
    "CASE WHEN related::VARCHAR = '[]' THEN NULL ELSE json_transform(related, "
    """'[{"prefect.resource.id":"VARCHAR","prefect.resource.role":"VARCHAR"}]') END"""
)
# A related item's (role, id) key: the role's length first, so no two pairs share the text.
PAIR_KEY_SQL = "hash(length({role})::VARCHAR || ':' || {role} || {id})"
_ID = 'x."prefect.resource.id"'
_ROLE = 'x."prefect.resource.role"'
# The two key lists from ``items`` (``RELATED_ITEMS_SQL``).
RELATED_ID_KEYS_SQL = f"list_transform(items, x -> hash({_ID}))"
RELATED_PAIR_KEYS_SQL = f"list_transform(items, x -> {PAIR_KEY_SQL.format(role=_ROLE, id=_ID)})"
# The keys and label sets of the events that have none (``resource_key`` NULL): every stored
# event when version 3 is applied; events written by plain SQL (benchmarks, tests) later.
INDEX_UNINDEXED_EVENTS: list[str] = [
    "INSERT INTO herald_label_sets SELECT DISTINCT ON (key) hash(resource::VARCHAR) AS key, "
    "resource, now() FROM events WHERE resource_key IS NULL",
    "UPDATE events SET resource_key = hash(resource::VARCHAR), "
    f"related_id_keys = {RELATED_ID_KEYS_SQL.replace('items', RELATED_ITEMS_SQL, 1)}, "
    f"related_pair_keys = {RELATED_PAIR_KEYS_SQL.replace('items', RELATED_ITEMS_SQL, 1)} "
    "WHERE resource_key IS NULL",
]
SIDE_TABLES_MIGRATION: list[str] = [
    "ALTER TABLE events ADD COLUMN resource_key UBIGINT",
    "ALTER TABLE events ADD COLUMN related_id_keys UBIGINT[]",
    "ALTER TABLE events ADD COLUMN related_pair_keys UBIGINT[]",
    LABEL_SETS_DDL,
    *INDEX_UNINDEXED_EVENTS,
]
# Each entry is (version, statements). Append only; never edit a released migration.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE events (
                id UUID NOT NULL,
                occurred TIMESTAMPTZ NOT NULL,
                received TIMESTAMPTZ NOT NULL,
                event VARCHAR NOT NULL,
                resource_id VARCHAR NOT NULL,
                resource JSON NOT NULL,
                related JSON NOT NULL,
                payload JSON NOT NULL,
                follows UUID
            )
            """,
            """
            CREATE VIEW event_resources AS
            SELECT id AS event_id, occurred, event, resource_id, '' AS role, resource AS labels
            FROM events
            UNION ALL
            SELECT e.id, e.occurred, e.event, r->>'prefect.resource.id',
                   r->>'prefect.resource.role', r
            FROM events AS e, UNNEST(CAST(e.related AS JSON[])) AS t(r)
            """,
        ],
    ),
    (
        2,
        [
            # Automations (SPEC §7). `body` is the whole automation in Prefect's JSON shape; the
            # other columns repeat what users filter on in SQL.
            """
            CREATE TABLE automations (
                id UUID PRIMARY KEY,
                name VARCHAR NOT NULL,
                description VARCHAR NOT NULL,
                enabled BOOLEAN NOT NULL,
                tags VARCHAR[] NOT NULL,
                body JSON NOT NULL,
                created TIMESTAMPTZ NOT NULL,
                updated TIMESTAMPTZ NOT NULL
            )
            """,
            # One row per firing (kind triggered | resolved). The id is derived from what fired,
            # so re-deriving a firing after a restart is a no-op. `event_id` is the id of the
            # herald.automation.triggered|resolved event; `announced` turns true once it is
            # committed (a restart re-announces the rest).
            """
            CREATE TABLE automation_firings (
                id UUID PRIMARY KEY,
                automation_id UUID NOT NULL,
                kind VARCHAR NOT NULL,
                occurred TIMESTAMPTZ NOT NULL,
                trigger_path VARCHAR NOT NULL,
                bucket_key JSON NOT NULL,
                triggering_event_id UUID,
                event_id UUID NOT NULL,
                announced BOOLEAN NOT NULL,
                body JSON NOT NULL,
                created TIMESTAMPTZ NOT NULL
            )
            """,
            # One row per action a firing runs; status triggered -> executed | failed. A row
            # still 'triggered' after a restart is run again (at-least-once actions).
            """
            CREATE TABLE action_runs (
                id UUID PRIMARY KEY,
                firing_id UUID NOT NULL,
                automation_id UUID NOT NULL,
                action_list VARCHAR NOT NULL,
                action_index INTEGER NOT NULL,
                action_type VARCHAR NOT NULL,
                phase VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                reason VARCHAR,
                detail JSON,
                response_status INTEGER,
                created TIMESTAMPTZ NOT NULL,
                started TIMESTAMPTZ,
                finished TIMESTAMPTZ
            )
            """,
            # The evaluator's state (buckets, child firings, held followers, …) and the
            # watermark it was taken at: the `received` of the last event it had seen.
            """
            CREATE TABLE automation_state (
                key VARCHAR PRIMARY KEY,
                snapshot JSON NOT NULL,
                watermark_received TIMESTAMPTZ,
                watermark_id UUID,
                updated TIMESTAMPTZ NOT NULL
            )
            """,
        ],
    ),
    (SIDE_TABLES_VERSION, SIDE_TABLES_MIGRATION),
]

LATEST = MIGRATIONS[-1][0]


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Bring the database to the latest schema version; returns the version it is at."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS herald_schema (version INTEGER NOT NULL, "
        "applied TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT max(version) FROM herald_schema").fetchone()
    current = row[0] if row and row[0] is not None else 0
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO herald_schema (version) VALUES (?)", [version])
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current
