"""The store's DDL as ordered migrations; nothing else issues DDL.

Public tables (a contract users query with ``herald sql``): ``events``, ``event_resources``
(a view: one row per involved resource, role ``''`` for the primary), and later the automation
tables. Label access reads naturally: ``resource['service.name']``.
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
                id UUID PRIMARY KEY,
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
