"""The Python SDK (``emit_event``) against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider

from collector import EventsWorker, EventTooLarge, emit_event
from collector.app import Herald
from collector.domain.events import Limits


@pytest.fixture
def worker(herald: Herald) -> Iterator[EventsWorker]:
    sender = EventsWorker(herald.grpc_address)
    yield sender
    sender.close()


def test_emit_event_returns_the_event_and_it_is_stored(
    herald: Herald, worker: EventsWorker
) -> None:
    event = emit_event(
        "app.order.shipped",
        resource={"prefect.resource.id": "app.order.8812", "prefect.resource.name": "Order 8812"},
        related=[{"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}],
        payload={"carrier": "DHL"},
        worker=worker,
    )
    assert event is not None and event.id is not None
    assert worker.flush(10)
    assert herald.store is not None
    stored = herald.store.get_event(str(event.id))
    assert stored is not None
    assert stored.event == "app.order.shipped"
    assert stored.resource["prefect.resource.name"] == "Order 8812"
    assert stored.related == event.related
    assert stored.payload == {"carrier": "DHL"}
    assert stored.occurred == event.occurred


def test_many_events_are_batched_and_all_arrive(herald: Herald, worker: EventsWorker) -> None:
    for i in range(2500):
        emit_event(
            "app.tick", resource={"prefect.resource.id": f"app.clock.{i % 7}"}, worker=worker
        )
    assert worker.flush(20)
    assert herald.store is not None and herald.store.count_events() == 2500


def test_follows_is_kept_only_within_five_minutes(worker: EventsWorker) -> None:
    now = datetime.now(UTC)
    leader = emit_event("a", resource={"prefect.resource.id": "r"}, occurred=now, worker=worker)
    close = emit_event(
        "b",
        resource={"prefect.resource.id": "r"},
        occurred=now + timedelta(minutes=4),
        follows=leader,
        worker=worker,
    )
    far = emit_event(
        "c",
        resource={"prefect.resource.id": "r"},
        occurred=now + timedelta(minutes=10),
        follows=leader,
        worker=worker,
    )
    assert leader is not None and close is not None and far is not None
    assert close.follows == leader.id
    assert far.follows is None


def test_too_large_raises_and_other_problems_return_none(worker: EventsWorker) -> None:
    with pytest.raises(EventTooLarge):
        emit_event(
            "a",
            resource={"prefect.resource.id": "r"},
            payload={"x": "y" * 2000},
            worker=worker,
            limits=Limits(max_event_bytes=1000),
        )
    # a broken resource is logged and swallowed, as Prefect's emit_event does
    assert emit_event("a", resource={}, worker=worker) is None


def test_inside_a_span_the_span_and_trace_are_related(herald: Herald, worker: EventsWorker) -> None:
    tracer = TracerProvider().get_tracer("sdk-test")
    with tracer.start_as_current_span("checkout") as span:
        event = emit_event(
            "app.order.paid", resource={"prefect.resource.id": "app.order.1"}, worker=worker
        )
        ctx = span.get_span_context()
    assert event is not None
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event.related}
    assert roles == {
        "span": f"otel.span.{ctx.span_id:016x}",
        "trace": f"otel.trace.{ctx.trace_id:032x}",
    }
    assert worker.flush(10)
    assert herald.store is not None
    stored = herald.store.get_event(str(event.id))
    assert stored is not None and len(stored.related) == 2
