"""``domain/traces.py``: a trace's events put back together — the shapes the OTLP mapping
stores, and what hand-made or partial data may hold (a parent never stored, a parent cycle,
native events borrowing span names, more events than a trace query reads)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest

from collector.config import QueryConfig
from collector.domain.columns import EventColumns
from collector.domain.events import ReceivedEvent, datetime_to_us
from collector.domain.traces import assemble_trace, read_trace, tree_guides
from collector.errors import NotFound
from collector.store.duckdb_store import EventStore, columns_to_arrow
from collector.store.reader import EventReader

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SERVICE = {"prefect.resource.id": "otel.service.api", "prefect.resource.name": "api"}


def _event(name: str, at_ms: float, related: list[dict[str, str]], payload: Any) -> ReceivedEvent:
    return ReceivedEvent(
        id=uuid4(),
        occurred=T0 + timedelta(milliseconds=at_ms),
        received=T0,
        event=name,
        resource=SERVICE,
        related=related,
        payload=payload,
    )


def span(
    span_id: str, parent: str | None, start_ms: float, end_ms: float, code: str = "unset"
) -> ReceivedEvent:
    related = [
        {"prefect.resource.id": f"otel.span.{span_id}", "prefect.resource.role": "span",
         "prefect.resource.name": f"op-{span_id[-2:]}", "otel.span.kind": "internal",
         "otel.trace_id": TRACE, "http.route": "/x"},
        {"prefect.resource.id": f"otel.trace.{TRACE}", "prefect.resource.role": "trace"},
    ]  # fmt: skip
    if parent:
        related.append(
            {"prefect.resource.id": f"otel.span.{parent}", "prefect.resource.role": "parent-span"}
        )
    payload = {
        "kind": "internal",
        "status": {"code": code, "message": ""},
        "start_time": (T0 + timedelta(milliseconds=start_ms)).isoformat(),
        "end_time": (T0 + timedelta(milliseconds=end_ms)).isoformat(),
        "duration_ms": end_ms - start_ms,
    }
    return _event(f"otel.span.{code}", end_ms, related, payload)


def test_a_parent_not_stored_makes_a_root_and_children_follow_their_parent() -> None:
    trace = assemble_trace(
        TRACE,
        [
            span("00000000000000b2", "00000000000000a1", 30, 40),
            span("00000000000000a1", None, 0, 100),
            span("00000000000000c3", "00000000000000ff", 5, 10),  # parent never stored
            span("00000000000000b1", "00000000000000a1", 10, 20, "error"),
        ],
    )
    order = [(s["span_id"][-2:], s["depth"], s["parent_missing"]) for s in trace["spans"]]
    assert order == [("a1", 0, False), ("b1", 1, False), ("b2", 1, False), ("c3", 0, True)]
    assert trace["error_count"] == 1
    assert trace["duration_ms"] == 100
    assert trace["spans"][0]["attributes"] == {"http.route": "/x"}
    assert trace["spans"][0]["name"] == "op-a1"


def test_a_parent_cycle_is_shown_once_per_span() -> None:
    trace = assemble_trace(
        TRACE,
        [
            span("00000000000000a1", "00000000000000a2", 0, 10),
            span("00000000000000a2", "00000000000000a1", 1, 9),
            span("00000000000000a3", "00000000000000a3", 2, 8),  # its own parent
        ],
    )
    assert sorted(s["span_id"][-2:] for s in trace["spans"]) == ["a1", "a2", "a3"]
    assert all(s["parent_missing"] for s in trace["spans"] if s["depth"] == 0)


def test_native_events_borrowing_span_names_do_not_break_it() -> None:
    trace_item = {"prefect.resource.id": f"otel.trace.{TRACE}", "prefect.resource.role": "trace"}
    odd = _event("otel.span.ok", 5, [trace_item], {"status": "fine", "kind": 3})
    odd_span = _event(
        "otel.span.error",
        6,
        [{"prefect.resource.id": "otel.span.00000000000000d4", "prefect.resource.role": "span"},
         trace_item],
        {"status": ["x"], "kind": None, "duration_ms": "long", "start_time": "yesterday"},
    )  # fmt: skip
    emitted = _event(
        "app.order.placed",
        7,
        [{"prefect.resource.id": "otel.span.00000000000000e5", "prefect.resource.role": "span"},
         trace_item],
        {"order": 1},
    )  # fmt: skip
    trace = assemble_trace(TRACE, [odd, odd_span, emitted])
    [only] = trace["spans"]
    assert only["status"] == {"code": "unset", "message": ""}
    assert only["duration_ms"] is None and only["start_time"] is None
    # No span of their own: kept as the trace's other events, not dropped.
    assert [e["event"] for e in trace["other_events"]] == ["otel.span.ok", "app.order.placed"]
    assert trace["event_count"] == 3


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[EventReader]:
    """A store holding 25 spans of the trace (and one of another trace)."""
    events = [span(f"{i + 1:016x}", None, i, i + 1) for i in range(25)]
    other = span("0000000000000fff", None, 0, 1)
    other.related[1]["prefect.resource.id"] = "otel.trace." + "1" * 32
    cols = EventColumns()
    for e in [*events, other]:
        payload = orjson.dumps(e.payload).decode()
        cols.append(str(e.id), datetime_to_us(e.occurred), e.event, e.resource, e.related, payload)
    store = EventStore(tmp_path / "t.duckdb")
    store.append(columns_to_arrow(cols, [datetime_to_us(T0)] * len(cols)))
    yield EventReader(store, QueryConfig())
    store.close()


def test_read_trace_walks_pages_and_says_when_it_stopped(reader: EventReader) -> None:
    whole = read_trace(reader, TRACE)
    assert whole["span_count"] == 25 and not whole["truncated"]
    cut = read_trace(reader, TRACE, max_events=10)
    assert cut["span_count"] == 10 and cut["truncated"]
    # The byte bound: each span's payload and related JSON is some 500 bytes.
    small = read_trace(reader, TRACE, max_bytes=2_000)
    assert 1 <= small["span_count"] < 25 and small["truncated"]
    assert [s["span_id"] for s in small["spans"]] == [s["span_id"] for s in whole["spans"]][
        : small["span_count"]
    ]  # the oldest ones
    # At least one event, however small the bound.
    assert read_trace(reader, TRACE, max_bytes=1)["span_count"] == 1
    with pytest.raises(NotFound):
        read_trace(reader, "2" * 32)


def test_tree_guides() -> None:
    assert tree_guides([0, 1, 2, 1, 2, 0]) == ["", "├─ ", "│  └─ ", "└─ ", "   └─ ", ""]
    assert tree_guides([0, 1, 1, 2, 2]) == ["", "├─ ", "└─ ", "   ├─ ", "   └─ "]
