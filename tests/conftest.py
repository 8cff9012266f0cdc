"""Shared fixtures: a real Herald server on 127.0.0.1 port 0 with a real DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app import Herald
from collector.testing import running_herald, test_config

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
