"""Shared fixtures: a real Herald server on 127.0.0.1 port 0 with a real DuckDB file; a real
PostgreSQL server for the session (``postgres``: the DuckLake catalog, the automations leader's
lock), each test taking a database of its own (``postgres.create_database()``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app import Herald
from collector.testing import (
    REQUIRE_POSTGRES_ENV,
    PostgresServer,
    PostgresUnavailable,
    postgres_bin_dir,
    postgres_server,
    running_herald,
    test_config,
)

INGEST_TOKEN = "test-ingest-token"
READ_TOKEN = "test-read-token"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "herald.duckdb"


@pytest.fixture
def herald(db_path: Path) -> Iterator[Herald]:
    """A running server without auth."""
    with running_herald(test_config(db_path)) as server:
        yield server


@pytest.fixture
def secured_herald(db_path: Path) -> Iterator[Herald]:
    """A running server with an ingest token and a read-only token."""
    tokens = [
        {"token": INGEST_TOKEN, "scopes": ["ingest"]},
        {"token": READ_TOKEN, "scopes": ["read"]},
    ]
    with running_herald(test_config(db_path, auth={"tokens": tokens})) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session (collector.testing.postgres_server).

    Skipped when the machine has no PostgreSQL binaries, unless REQUIRE_POSTGRES_TESTS is set
    (the CI sets it after installing them: there a missing server is a failure)."""
    try:
        postgres_bin_dir()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            raise
        pytest.skip(str(exc))
    with postgres_server() as server:
        yield server
