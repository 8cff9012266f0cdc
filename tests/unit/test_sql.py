"""User SQL: one read-only statement, limits, and no file/network/extension access."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.errors import InvalidSql
from collector.store.duckdb_store import EventStore
from collector.store.sql import SqlResult, run_readonly


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "sql.duckdb")


def run(store: EventStore, sql: str, timeout: float = 5.0, max_rows: int = 100) -> SqlResult:
    return run_readonly(store.cursor(), sql, timeout=timeout, max_rows=max_rows)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM events",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "FROM events",
        "DESCRIBE events",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM events",
        "SUMMARIZE events",
        "-- a comment first\nSELECT 1",
    ],
)
def test_read_only_statements_run(store: EventStore, sql: str) -> None:
    result = run(store, sql)
    assert result.table.num_columns


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "may not read or write files"),
        ("SELECT * FROM read_text('/etc/passwd')", "may not read or write files"),
        ("SELECT * FROM glob('/etc/*')", "may not read or write files"),
        ("COPY events TO '/tmp/out.csv'", "only read-only queries"),
        ("ATTACH '/tmp/other.duckdb'", "only read-only queries"),
        ("INSTALL httpfs", "only read-only queries"),
        ("LOAD httpfs", "only read-only queries"),
        ("INSERT INTO events SELECT * FROM events", "only read-only queries"),
        ("DELETE FROM events", "only read-only queries"),
        ("SET enable_external_access = true", "only read-only queries"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("EXPLAIN ANALYZE DELETE FROM events", "only read-only queries"),
        ("SELEC 1", "does not parse"),
        ("WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d", "read-only|not parse|only"),
    ],
)
def test_refused_statements_say_why(store: EventStore, sql: str, message: str) -> None:
    with pytest.raises(InvalidSql, match=message):
        run(store, sql)


def test_row_limit_truncates_and_says_so(store: EventStore) -> None:
    result = run(store, "SELECT * FROM range(50)", max_rows=10)
    assert len(result.rows) == 10 and result.truncated
    result = run(store, "SELECT * FROM range(10)", max_rows=10)
    assert len(result.rows) == 10 and not result.truncated


def test_time_limit_interrupts(store: EventStore) -> None:
    with pytest.raises(InvalidSql, match="time limit"):
        run(store, "SELECT count(*) FROM range(100000000000) a", timeout=0.3)
    # the cursor's store is still usable afterwards
    assert run(store, "SELECT 1").rows == [(1,)]
