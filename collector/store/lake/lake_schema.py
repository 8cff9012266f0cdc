"""The lake's tables: the events part of ``store/schema.py`` (``events``, the
``event_resources`` view and the filters' side tables, statement for statement), versioned in
a ``herald_schema`` table of the lake. Automations' tables are not here: DuckLake has no
primary keys or indexes, and the automations state lives where one leader writes it
(docs/scale-out.md).

Several collectors may start on an empty catalog at once; ``LakeStore`` runs this under its
commit lock, so one creates the tables and the others find them.
"""

from __future__ import annotations

import duckdb

from collector.store.schema import MIGRATIONS, SIDE_TABLES_MIGRATION

# (version, statements): version 1 is the DuckDB file's version 1, events only; version 2 the
# filters' side tables, the DuckDB file's version 3 (``store/filter_index.py``).
LAKE_MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, MIGRATIONS[0][1]),
    (2, SIDE_TABLES_MIGRATION),
]
LAKE_LATEST = LAKE_MIGRATIONS[-1][0]


# Rows per Parquet row group (DuckDB's default: 122,880). The feed reads a page by probing
# narrow time windows, which skip row groups by their min/max statistics; once upkeep merges
# the small files of group commits into large ones, smaller row groups keep that pruning.
# Measured on a 200k-event lake, feed page p50 after compaction: 512 ms at the default, 220 ms
# at 16,384 (loaded machine); before compaction both ~170 ms.
ROW_GROUP_ROWS = 16_384


def migrate_lake(conn: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Bring the lake ``catalog`` (the cursor's default catalog) to ``LAKE_LATEST``; returns
    the version."""
    # DuckLake takes literal defaults only: `applied` is given by each insert.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS herald_schema "
        "(version INTEGER NOT NULL, applied TIMESTAMPTZ NOT NULL)"
    )
    row = conn.execute("SELECT max(version) FROM herald_schema").fetchone()
    current = row[0] if row and row[0] is not None else 0
    for version, statements in LAKE_MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN")
        try:
            for sql in statements:
                conn.execute(sql)
            if version == 1:  # a new lake: its files' layout (persisted in the catalog)
                conn.execute(
                    "CALL ducklake_set_option(?, 'parquet_row_group_size', ?)",
                    [catalog, ROW_GROUP_ROWS],
                )
            conn.execute("INSERT INTO herald_schema VALUES (?, now())", [version])
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current
