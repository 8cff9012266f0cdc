"""User SQL reads Herald's tables and nothing else, decided on DuckDB's own parse.

The refused statements are the ones that got through the first-word check (issue 9): a
leading comment in front of ``EXPLAIN ANALYZE CREATE …``, ``CHECKPOINT``, ``VACUUM``,
``CALL checkpoint()``; ``read_blob`` of the store's own ``.wal`` (DuckDB lets a database read
its own files even with external access off); ``duckdb_databases()`` showing the store's
absolute path. Checked on a real store file with a WAL, through the server's gRPC API and
through the offline ``--db`` reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.client.local import LocalReader
from collector.client.remote import HeraldClient
from collector.config import QueryConfig
from collector.errors import InvalidInput, InvalidSql
from collector.store.duckdb_store import EventStore
from collector.store.sql import SqlResult, run_readonly
from collector.testing import running_herald, test_config


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(tmp_path / "sandbox.duckdb")
    # Something in the WAL (the store never checkpoints on its own): read_blob of the WAL
    # returned these bytes before.
    with store.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS scratch_marker (a INTEGER)")
    yield store
    store.close()


def run(store: EventStore, sql: str) -> SqlResult:
    return run_readonly(store.cursor(), sql, timeout=5.0, max_rows=100)


def test_the_store_has_a_wal_to_protect(store: EventStore) -> None:
    assert Path(store.path + ".wal").stat().st_size > 0


WRITES_AND_MAINTENANCE = [
    "/**/ EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
    "/* x */ EXPLAIN (ANALYZE) CREATE TEMP TABLE t AS SELECT 1",
    "-- x\nEXPLAIN ANALYZE INSERT INTO events SELECT * FROM events",
    "EXPLAIN ANALYZE VACUUM",
    "/**/ EXPLAIN ANALYZE CREATE TEMP MACRO m() AS 1",
    "/**/ EXPLAIN ANALYZE CHECKPOINT",
    "/**/ EXPLAIN ANALYZE FORCE CHECKPOINT",
    "/**/ EXPLAIN ANALYZE CALL checkpoint()",
    "/**/ EXPLAIN ANALYZE VACUUM",
    "EXPLAIN CREATE TEMP TABLE t AS SELECT 1",
    "/**/ CREATE TEMP MACRO m() AS 1",
    "/**/ CREATE TEMP TABLE t AS SELECT 1",
    "/**/ CHECKPOINT",
    "/**/ FORCE CHECKPOINT",
    "/**/ VACUUM",
    "/**/ ANALYZE",
    "/**/ CALL checkpoint()",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM force_checkpoint()",
    "SELECT * FROM query('CHECKPOINT')",
    "SELECT * FROM query_table('events')",
    "/**/ PRAGMA enable_profiling",
    "/**/ SET threads = 1",
    "/**/ ATTACH ':memory:' AS m",
    "/**/ DETACH sandbox",
    "/**/ USE memory",
    "/**/ BEGIN",
    "/**/ EXPORT DATABASE 'out'",
    "/**/ COPY events TO 'out.csv'",
    "SELECT * FROM enable_logging()",
]


@pytest.mark.parametrize("sql", WRITES_AND_MAINTENANCE)
def test_writes_and_maintenance_are_refused_whatever_comes_first(
    store: EventStore, sql: str
) -> None:
    with pytest.raises(InvalidSql, match=r"read-only|refused|not available"):
        run(store, sql)
    cur = store.cursor()
    try:
        # nothing was created, not even in the connection-wide temp catalog
        made = cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'temp'"
        ).fetchone()
        macros = cur.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'm'"
        ).fetchone()
    finally:
        cur.close()
    assert made == (0,) and macros == (0,)


def _own_files(store: EventStore) -> list[str]:
    return [store.path, store.path + ".wal", store.path + ".tmp/x"]


@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM read_blob('{path}')",
        "SELECT content FROM read_text('{path}')",
        "SELECT * FROM read_csv('{path}')",
        "SELECT * FROM read_csv_auto('{path}')",
        "SELECT * FROM read_parquet('{path}')",
        "SELECT * FROM read_json('{path}')",
        "SELECT * FROM glob('{path}')",
        "SELECT * FROM sniff_csv('{path}')",
        "SELECT * FROM parquet_metadata('{path}')",
        "SELECT * FROM '{path}'",
        "SELECT * FROM main.read_blob('{path}')",
        "SELECT * FROM \"READ_BLOB\"('{path}')",
        "SELECT (SELECT count(*) FROM read_blob('{path}'))",
        "WITH f AS (SELECT * FROM read_blob('{path}')) SELECT size FROM f",
        "SELECT 1 WHERE EXISTS (SELECT * FROM read_blob('{path}'))",
        "/**/ EXPLAIN ANALYZE SELECT * FROM read_blob('{path}')",
        "DESCRIBE SELECT * FROM read_blob('{path}')",
        "SUMMARIZE SELECT * FROM read_blob('{path}')",
    ],
)
def test_no_file_is_readable_not_even_the_stores_own(store: EventStore, template: str) -> None:
    for path in [*_own_files(store), "/etc/hostname"]:
        with pytest.raises(InvalidSql, match=r"refused|not available|read-only"):
            run(store, template.format(path=path))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM duckdb_databases()",
        "FROM duckdb_databases",
        "SELECT path FROM pragma_database_list",
        "PRAGMA database_list",
        "SELECT * FROM duckdb_settings()",
        "FROM pg_catalog.pg_settings",
        "SELECT current_setting('temp_directory')",
        "SELECT * FROM duckdb_temporary_files()",
        "SELECT * FROM duckdb_extensions()",
        "SELECT * FROM histogram('duckdb_databases', path)",
    ],
)
def test_the_servers_paths_are_not_shown(store: EventStore, sql: str) -> None:
    with pytest.raises(InvalidSql):
        run(store, sql)


def test_no_catalog_view_user_sql_may_read_shows_the_stores_directory(
    store: EventStore, tmp_path: Path
) -> None:
    # Every built-in view and every allowed argument-less table function, read whole: a new
    # DuckDB that adds one showing paths fails here instead of leaking.
    cur = store.cursor()
    try:
        views = cur.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE internal"
        ).fetchall()
    finally:
        cur.close()
    assert len(views) > 20
    readable = 0
    for schema, view in views:
        try:
            result = run(store, f'SELECT * FROM {schema}."{view}"')
        except InvalidSql:
            continue
        readable += 1
        assert str(tmp_path) not in str(result.rows), f"{schema}.{view} shows the store's path"
    for function in ["duckdb_tables", "duckdb_columns", "duckdb_schemas", "duckdb_views"]:
        assert str(tmp_path) not in str(run(store, f"SELECT * FROM {function}()").rows)
    assert readable > 20  # information_schema and pg_catalog stay readable


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM events",
        "-- a comment first\nSELECT 1",
        "/* a comment */ FROM events",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "VALUES (1), (2)",
        "(SELECT 1)",
        "DESCRIBE events",
        "SHOW TABLES",
        "SHOW DATABASES",
        "SUMMARIZE events",
        "EXPLAIN SELECT * FROM events",
        "EXPLAIN (FORMAT json) SELECT * FROM events",
        "/**/ EXPLAIN ANALYZE SELECT count(*) FROM events",
        "EXPLAIN (ANALYZE) SELECT 1",
        "EXPLAIN ANALYZE (SELECT 1)",
        "PIVOT events ON event IN ('a.b') USING count(*)",
        "SELECT * FROM information_schema.columns WHERE table_name = 'events'",
        "SELECT * FROM duckdb_columns() WHERE table_name = 'events'",
        "SELECT * FROM pragma_table_info('events')",
        "SELECT * FROM range(3) JOIN unnest([1, 2]) ON true",
        "SELECT * FROM json_each('{\"a\": 1}')",
        "SELECT list_transform([1, 2], x -> x + 1)",
        "SELECT e.event FROM events e JOIN event_resources r ON r.event_id = e.id",
        "SELECT a.name FROM automations a JOIN action_runs r ON r.automation_id = a.id",
        "SELECT time_bucket(INTERVAL 1 minute, occurred) AS minute, "
        "resource->>'service.name' AS service, count(*) FROM events GROUP BY ALL",
    ],
)
def test_read_only_queries_of_heralds_tables_run(store: EventStore, sql: str) -> None:
    assert run(store, sql).table.num_columns


def test_the_server_and_the_offline_reader_refuse_alike(tmp_path: Path) -> None:
    db = tmp_path / "served.duckdb"
    refused = [
        "/**/ EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
        f"SELECT size FROM read_blob('{db}.wal')",
        "SELECT path FROM duckdb_databases()",
    ]
    with running_herald(test_config(db)) as server:
        with HeraldClient(server.grpc_address) as client:
            for sql in refused:
                with pytest.raises(InvalidInput):
                    client.sql(sql)
            assert client.sql("SELECT count(*) FROM events")[0].num_rows == 1
    with LocalReader(str(db), QueryConfig()) as local:
        for sql in refused:
            with pytest.raises(InvalidSql):
                local.sql(sql)
        assert local.sql("SELECT count(*) FROM events")[0].num_rows == 1


def test_the_store_files_are_still_readable_by_duckdb_itself(store: EventStore) -> None:
    # The refusals are user SQL's: the store itself (checkpoints, the WAL) works as before.
    with store.transaction() as cur:
        cur.execute("INSERT INTO scratch_marker VALUES (1)")
    assert store.checkpoint()
    cur = store.cursor()
    try:
        assert cur.execute("SELECT count(*) FROM scratch_marker").fetchone() == (1,)
    finally:
        cur.close()
