"""The test suite's PostgreSQL (collector.testing.postgres_server): a real server that answers
SQL, gives each test a database of its own, and runs as an unprivileged user."""

from __future__ import annotations

from collector.testing import PostgresServer


def test_the_session_postgres_answers_and_hands_out_fresh_databases(
    postgres: PostgresServer,
) -> None:
    first, second = postgres.create_database(), postgres.create_database()
    assert first != second
    postgres.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)", first)
    assert postgres.psql("SELECT sum(x) FROM t", first).strip() == "42"
    # A database of its own: the other one has no such table.
    assert (
        postgres.psql("SELECT count(*) FROM pg_tables WHERE tablename = 't'", second).strip() == "0"
    )
    assert postgres.psql("SHOW server_version_num").strip().startswith("1")
    assert postgres.psql("SELECT current_user").strip() == postgres.user
    # PostgreSQL refuses to run as root, so as root the server runs as an unprivileged user.
    assert postgres.data_dir.stat().st_uid != 0
