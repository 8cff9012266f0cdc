"""Where the OTel exporter plugin sends (``resolve_target``): arguments over the environment,
``HERALD_DB`` for embedded mode, a clear error when a file and a server are both asked for; and
``HERALD_DB`` is a client variable, not a server config key."""

from __future__ import annotations

import pytest

from collector.config import load_config
from collector.errors import ConfigError
from collector.otel import Target, resolve_target


def test_the_environment_picks_the_mode() -> None:
    assert resolve_target(env={}) == Target()
    assert resolve_target(env={"HERALD_DB": "a.duckdb", "HERALD_TOKEN": "t"}) == Target(
        db="a.duckdb"
    )
    assert resolve_target(env={"HERALD_ADDRESS": "h:1", "HERALD_TOKEN": "t"}) == Target(
        address="h:1", token="t"
    )


def test_arguments_win_over_the_environment() -> None:
    env = {"HERALD_DB": "a.duckdb", "HERALD_ADDRESS": "h:1", "HERALD_TOKEN": "t"}
    assert resolve_target(address="other:2", env=env) == Target(address="other:2", token="t")
    assert resolve_target(db="b.duckdb", env=env) == Target(db="b.duckdb")
    assert resolve_target(address="x:3", token="u", env=env) == Target(address="x:3", token="u")


def test_a_file_and_a_server_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"HERALD_DB=a\.duckdb and HERALD_ADDRESS=h:1"):
        resolve_target(env={"HERALD_DB": "a.duckdb", "HERALD_ADDRESS": "h:1"})
    with pytest.raises(ConfigError, match="not both"):
        resolve_target(address="h:1", db="a.duckdb", env={})


def test_herald_db_in_the_environment_does_not_break_the_server_config() -> None:
    # A shell that exports HERALD_DB for an instrumented app still runs `herald serve`.
    assert load_config(env={"HERALD_DB": "app.duckdb"}).storage.path == "herald.duckdb"
