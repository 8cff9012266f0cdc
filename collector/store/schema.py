"""The store's DDL as ordered migrations; nothing else issues DDL.

Public tables (a contract users query with ``herald sql``): ``events``, ``event_resources``
(a view: one row per involved resource, role ``''`` for the primary), ``automations``,
``automation_firings``, ``action_runs`` and ``automation_state``. Label access reads
naturally: ``resource['service.name']``.
"""

from __future__ import annotations

import duckdb

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
