"""The writer's insert binds no parameters: DuckDB's Python client tries ``import pandas`` for
every parameter it binds, and with pandas absent (Herald does not depend on it) each try walks
``sys.path`` — about a tenth of the writer thread's time under load. The occurred range is
written into the statement instead; the times at the ends of what the store holds still
dedupe right."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.ids import uuid7_str
from collector.store.arrow_batch import MAX_OCCURRED_US, MIN_OCCURRED_US
from collector.store.duckdb_store import EventStore, columns_to_arrow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "s.duckdb")
    try:
        yield s
    finally:
        s.close()


def _cols(occurred: list[int], ids: list[str] | None = None) -> EventColumns:
    cols = EventColumns()
    for i, us in enumerate(occurred):
        cols.append(
            ids[i] if ids else uuid7_str(), us, "lit.test", {"prefect.resource.id": "r"}, [], "{}"
        )
    return cols


def _append(store: EventStore, cols: EventColumns) -> int:
    return store.append(columns_to_arrow(cols, [datetime_to_us(datetime.now(UTC))] * len(cols)))


def test_an_append_tries_no_import(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _append(store, _cols([datetime_to_us(datetime.now(UTC))]))  # warm: first-use imports
    tried: list[str] = []
    real = builtins.__import__

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        tried.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    now = datetime_to_us(datetime.now(UTC))
    assert _append(store, _cols([now, now + 1, now + 2])) == 3
    monkeypatch.undo()
    assert "pandas" not in tried


@pytest.mark.parametrize(
    "occurred",
    [
        [MIN_OCCURRED_US, MIN_OCCURRED_US + 1],
        [MAX_OCCURRED_US - 1, MAX_OCCURRED_US],
        [MIN_OCCURRED_US, MAX_OCCURRED_US],
        [1_764_763_200_123_456, 1_764_763_200_123_457],  # microseconds kept
    ],
)
def test_the_written_range_dedupes_at_the_ends_of_time(
    store: EventStore, occurred: list[int]
) -> None:
    ids = [uuid7_str() for _ in occurred]
    assert _append(store, _cols(occurred, ids)) == len(occurred)
    assert _append(store, _cols(occurred, ids)) == 0  # every one found in the written range
    assert store.count_events() == len(occurred)
