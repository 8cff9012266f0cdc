"""Live-tail fan-out under load: the subscriber cap, exact delivery for mixed (indexed and
check-all) filters, and ingest that never waits for tail matching or for slow readers."""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.columns import EventColumns
from collector.domain.events import EPOCH, format_time
from collector.domain.filters import parse_filter
from collector.domain.ids import uuid7_str
from collector.errors import Busy
from collector.pipeline.tail import TailHub, wire_json
from collector.testing import running_herald, test_config

NOW = datetime.now(UTC)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def make_event(rng: random.Random, n: int, name: str | None = None) -> dict[str, Any]:
    svc = rng.choice(["checkout", "payments", "shipping"])
    related = [
        {
            "prefect.resource.id": f"app.customer.{rng.randrange(4)}",
            "prefect.resource.role": rng.choice(["customer", "tenant"]),
        }
        for _ in range(rng.randrange(3))
    ]
    return {
        "event": name or f"app.{svc}.{rng.choice(['created', 'failed', 'retried'])}",
        "occurred": format_time(NOW + timedelta(microseconds=n)),
        "resource": {
            "prefect.resource.id": f"app.{svc}.{rng.randrange(5)}",
            "region": rng.choice(["eu", "us", "ap"]),
            "weird/key": 'quote"and\\slash',
        },
        "related": related,
        "payload": {"n": n, "word": rng.choice(["alpha", "beta", "gamma"])},
        "id": uuid7_str(),
    }


# Indexed (exact and not), prefix, resource id, and check-all filters (with and without a
# raw pre-check), including ones that match nothing.
FILTERS: list[dict[str, Any]] = [
    {"event": {"name": ["app.checkout.failed"]}},
    {"event": {"name": ["app.checkout.failed", "app.payments.created"]}},
    {"event": {"name": ["app.shipping.retried"]}, "resource": {"labels": {"region": "eu"}}},
    {"event": {"prefix": ["app.pay"]}},
    {"event": {"prefix": ["app.", "app.ship"], "exclude_name": ["app.shipping.failed"]}},
    {"resource": {"id": ["app.checkout.1", "app.shipping.2"]}},
    {"resource": {"id_prefix": ["app.payments."]}},
    {"resource": {"id_prefix": ["app.payments."], "labels": {"region": ["us", "a*"]}}},
    {"related": {"id": ["app.customer.1"], "role": ["tenant"]}},
    {"related": [{"id": ["app.customer.2"]}, {"role": ["customer"]}]},
    {"any_resource": {"id_prefix": ["app.customer.3", "app.checkout.4"]}},
    {"any_resource": {"labels": {"weird/key": 'quote"and\\slash'}}},
    {"text": {"query": "gamma -failed"}},
    {"text": {"query": "+EU ALPHA app.customer.2"}},
    {"text": {"query": 'and\\slash "retried app"'}},
    {"event": {"exclude_prefix": ["app.checkout"]}},
    {"resource": {"labels": {"region": "!eu"}}},
    {},
    {"event": {"name": ["never.sent"]}},
    {"event": {"prefix": ["nothing."]}},
    {"resource": {"id": ["app.nobody.0"]}},
    {"occurred": {"until": "2000-01-01T00:00:00Z"}},
]


def test_index_and_fan_out_deliver_exactly_what_includes_says_in_commit_order() -> None:
    rng = random.Random(7)
    events = [make_event(rng, n) for n in range(2000)]
    filters = [parse_filter(f) for f in FILTERS]

    async def run() -> list[list[str]]:
        hub = TailHub(asyncio.get_running_loop(), buffer=10_000, max_subscribers=100)
        subs = [hub.subscribe(f) for f in filters]
        received = 0
        cols = EventColumns()  # after the loop: the last batch, re-sent
        for start in range(0, len(events), 500):
            cols = EventColumns()
            for e in events[start : start + 500]:
                cols.append(
                    e["id"],
                    (datetime.fromisoformat(e["occurred"]) - EPOCH) // timedelta(microseconds=1),
                    e["event"],
                    e["resource"],
                    e["related"],
                    orjson.dumps(e["payload"]).decode(),
                )
            received += 1
            hub.on_commit(cols, [received] * len(cols))
        # A re-sent batch (a client retry): nothing may show twice.
        hub.on_commit(cols, [received] * len(cols))
        deadline = time.monotonic() + 30
        while hub.backlog_events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.backlog_events == 0
        await asyncio.sleep(0.05)  # the wake-ups the tail thread scheduled on this loop
        out = []
        for sub in subs:
            ids = []
            while True:
                try:
                    kind, item = await asyncio.wait_for(sub.next(), 0.05)
                except TimeoutError:
                    break
                assert kind == "event"
                ids.append(item["id"])
            out.append(ids)
        hub.close()
        return out

    got = asyncio.run(run())
    for spec, f, ids in zip(FILTERS, filters, got, strict=True):
        expected = [e["id"] for e in events if f.includes(e)]
        assert ids == expected, spec


def test_tail_wire_json_is_the_stored_event(herald: Herald) -> None:
    rng = random.Random(3)
    sent = [make_event(rng, n) for n in range(20)]
    sent[0]["follows"] = sent[1]["id"]
    sent[1]["event"] = 'app.quote".name\u00e9'
    channel = grpc.insecure_channel(herald.grpc_address)
    call = tail_call(herald_pb2_grpc.HeraldStub(channel), {})
    wait_for(lambda: herald.tail is not None and herald.tail.subscriber_count == 1)
    with HeraldClient(herald.grpc_address) as client:
        client.emit(sent)
        got = [orjson.loads(next(call).event_json) for _ in sent]
        assert [e["id"] for e in got] == [e["id"] for e in sent]
        for event in got:
            assert event == client.get(event["id"])
    call.cancel()
    channel.close()


def tail_call(stub: herald_pb2_grpc.HeraldStub, filter: dict[str, Any] | None) -> Any:
    request = herald_pb2.TailRequest(
        filter_json=orjson.dumps(filter) if filter is not None else b"", backfill=False
    )
    return stub.Tail(request)


def test_tail_subscriber_past_the_cap_is_refused_busy_and_a_closed_one_frees_its_slot(
    db_path: Path,
) -> None:
    config = test_config(db_path, query={"max_tail_subscribers": 3})
    with running_herald(config) as herald:
        hub = herald.tail
        assert hub is not None
        channel = grpc.insecure_channel(herald.grpc_address)
        stub = herald_pb2_grpc.HeraldStub(channel)
        try:
            calls = [tail_call(stub, {"event": {"name": [f"x.{i}"]}}) for i in range(3)]
            wait_for(lambda: hub.subscriber_count == 3, what="3 subscribers")

            refused = tail_call(stub, None)
            with pytest.raises(grpc.RpcError) as info:
                next(refused)
            err = info.value
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert "max_tail_subscribers = 3" in (err.details() or "")
            assert "retry later" in (err.details() or "")
            status = status_pb2.Status.FromString(
                {m.key: m.value for m in err.trailing_metadata()}["grpc-status-details-bin"]
            )
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry)
            assert retry.retry_delay.seconds >= 1
            assert hub.subscriber_count == 3

            # The SDK/CLI client sees it as Busy with the same message.
            with HeraldClient(herald.grpc_address) as client:
                with pytest.raises(Busy, match="max_tail_subscribers"):
                    next(client.tail({}, backfill=False))

            calls[0].cancel()
            wait_for(lambda: hub.subscriber_count == 2, what="the closed slot to be freed")
            calls.append(tail_call(stub, {"event": {"name": ["after.cap"]}}))
            wait_for(lambda: hub.subscriber_count == 3, what="the new subscriber")
            event = make_event(random.Random(1), 0, name="after.cap")
            with HeraldClient(herald.grpc_address) as client:
                client.emit([event])
                assert orjson.loads(next(calls[-1]).event_json) == client.get(event["id"])
        finally:
            for call in calls:
                call.cancel()
            channel.close()


def test_mixed_filter_subscribers_over_grpc_get_exactly_their_events_in_commit_order(
    db_path: Path,
) -> None:
    # Buffers that hold everything: this test is about exactness, not lag.
    with running_herald(test_config(db_path, query={"tail_buffer_events": 10_000})) as herald:
        check_mixed_filters(herald)


def check_mixed_filters(herald: Herald) -> None:
    rng = random.Random(11)
    specs = FILTERS[:-1]  # the last one can never match, so it has no sentinel
    filters = [parse_filter(f) for f in specs]
    batches = [[make_event(rng, b * 1000 + n) for n in range(300)] for b in range(6)]
    # One sentinel per subscriber, made to match its filter: a reader stops at its own.
    sentinel_rng = random.Random(12)
    sentinels = []
    for f in filters:
        for attempt in range(100_000):
            candidate = make_event(sentinel_rng, 10_000_000 + attempt)
            # Some filters want what the batches never hold.
            if attempt % 4 == 1:
                candidate["event"] = "never.sent"
            elif attempt % 4 == 2:
                candidate["event"] = "nothing.here"
            elif attempt % 4 == 3:
                candidate["resource"]["prefect.resource.id"] = "app.nobody.0"
            if f.includes(candidate):
                sentinels.append(candidate)
                break
        else:
            raise AssertionError(f"no sentinel for {f}")
    sent = [e for batch in batches for e in batch] + sentinels

    got: list[list[str]] = [[] for _ in specs]
    channel = grpc.insecure_channel(herald.grpc_address)
    stub = herald_pb2_grpc.HeraldStub(channel)
    calls = [tail_call(stub, spec) for spec in specs]

    def read(k: int) -> None:
        for message in calls[k]:
            assert message.WhichOneof("item") == "event_json", message
            event_id = orjson.loads(message.event_json)["id"]
            got[k].append(event_id)
            if event_id == sentinels[k]["id"]:
                return

    assert herald.tail is not None
    wait_for(lambda: herald.tail is not None and herald.tail.subscriber_count == len(specs))
    readers = [threading.Thread(target=read, args=(k,)) for k in range(len(specs))]
    for r in readers:
        r.start()
    with HeraldClient(herald.grpc_address) as client:
        for batch in batches:
            assert client.emit(batch)[1] == []
        client.emit(batches[2])  # a re-send: no duplicates
        client.emit(sentinels)
    for r in readers:
        r.join(30)
    for call in calls:
        call.cancel()
    channel.close()
    for spec, f, sentinel, ids in zip(specs, filters, sentinels, got, strict=True):
        upto = sent.index(sentinel) + 1
        expected = [e["id"] for e in sent[:upto] if f.includes(e)]
        assert ids == expected, spec


def loop_lag_probe(
    loop: asyncio.AbstractEventLoop, stop: threading.Event, out: list[float]
) -> None:
    """How long the server's event loop takes to run a no-op, sampled until ``stop``."""

    async def noop() -> None:
        return None

    while not stop.is_set():
        t0 = time.perf_counter()
        asyncio.run_coroutine_threadsafe(noop(), loop).result(30)
        out.append(time.perf_counter() - t0)
        time.sleep(0.005)


@pytest.mark.slow
def test_ingest_is_not_delayed_by_costly_or_non_reading_subscribers(db_path: Path) -> None:
    config = test_config(db_path, query={"tail_buffer_events": 200})
    with running_herald(config) as herald:
        hub = herald.tail
        assert hub is not None
        channel = grpc.insecure_channel(herald.grpc_address)
        stub = herald_pb2_grpc.HeraldStub(channel)
        # 30 match-everything subscribers that never read, and 30 costly check-all ones
        # (text search, nothing matches) — matched on the tail thread, never on the loop.
        idle = [tail_call(stub, None) for _ in range(30)]
        costly = [tail_call(stub, {"text": {"query": f"zzz-{i}"}}) for i in range(30)]
        wait_for(lambda: hub.subscriber_count == 60, what="60 subscribers")

        rng = random.Random(5)
        bodies = [[make_event(rng, b * 10_000 + n) for n in range(2000)] for b in range(4)]
        lags: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=loop_lag_probe, args=(hub._loop, stop, lags))
        latencies: list[float] = []

        def emit(k: int) -> int:
            events = [{**e, "id": uuid7_str()} for e in bodies[k % len(bodies)]]
            with HeraldClient(herald.grpc_address) as client:
                t0 = time.perf_counter()
                accepted, errors = client.emit(events)
                latencies.append(time.perf_counter() - t0)
            assert errors == []
            return accepted

        probe.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                total = sum(pool.map(emit, range(16)))
        finally:
            stop.set()
            probe.join(30)
        assert total == 16 * 2000
        # The loop never runs the matching: 60 subscribers × 32k events would block it for
        # seconds (the old fan-out did, batch by batch).
        print(f"loop lag max {max(lags):.3f} s, emit latency {sorted(latencies)}")
        assert max(lags) < 0.5, f"event loop blocked for {max(lags):.2f} s"
        assert statistics.median(latencies) < 1.0, latencies
        assert max(latencies) < 5.0, latencies

        # A non-reading subscriber is never silently shorted: what it got plus what it was
        # told it missed is every event.
        seen = missed = 0
        for message in idle[0]:
            if message.WhichOneof("item") == "lagged":
                missed += message.lagged
            else:
                seen += 1
            if seen + missed >= total:
                break
        assert missed > 0
        assert seen + missed == total
        for call in idle + costly:
            call.cancel()
        channel.close()


def test_ingest_never_waits_for_tail_matching_however_slow(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Matching made absurdly slow (10 ms per candidate, the GIL released meanwhile): on the
    # old path it ran on the event loop and every Emit waited behind it.
    from collector.domain.filters import EventFilter

    original = EventFilter.includes

    def slow_includes(self: EventFilter, event: Any) -> bool:
        time.sleep(0.01)
        return original(self, event)

    monkeypatch.setattr(EventFilter, "includes", slow_includes)
    with running_herald(test_config(db_path)) as herald:
        hub = herald.tail
        assert hub is not None
        channel = grpc.insecure_channel(herald.grpc_address)
        stub = herald_pb2_grpc.HeraldStub(channel)
        # Indexed by prefix but not exact: every candidate goes through `includes`.
        spec = {"event": {"prefix": ["app."]}, "resource": {"labels": {"region": "eu"}}}
        calls = [tail_call(stub, spec) for _ in range(5)]
        for call in calls:
            call.initial_metadata()  # sent once the server has subscribed
        assert hub.subscriber_count == 5
        rng = random.Random(2)
        latencies = []
        with HeraldClient(herald.grpc_address) as client:
            for b in range(10):
                events = [make_event(rng, b * 1000 + n) for n in range(200)]
                t0 = time.perf_counter()
                assert client.emit(events) == (200, [])
                latencies.append(time.perf_counter() - t0)
        # 2,000 events × 5 subscribers × 10 ms of matching is 100 s of work still queued.
        assert hub.backlog_events > 0
        assert max(latencies) < 2.0, latencies
        for call in calls:
            call.cancel()
        channel.close()


def test_wire_json_matches_orjson_of_the_parsed_event() -> None:
    cols = EventColumns()
    cols.append(
        uuid7_str(),
        -1_500_000,  # before 1970, negative microseconds
        'a"b\\c\u2028',
        {"prefect.resource.id": "r", "k": 'v"\n'},
        [],
        '{"x":[1,2.5,null,"\\u0000"]}',
        follows=uuid7_str(),
    )
    data = orjson.loads(wire_json(cols, 0, 1_700_000_000_123_456))
    assert data == {
        "occurred": "1969-12-31T23:59:58.500000Z",
        "event": 'a"b\\c\u2028',
        "resource": {"prefect.resource.id": "r", "k": 'v"\n'},
        "related": [],
        "payload": {"x": [1, 2.5, None, "\u0000"]},
        "id": cols.ids[0],
        "follows": cols.follows[0],
        "received": "2023-11-14T22:13:20.123456Z",
    }


def test_shed_and_dropped_batches_are_counted_as_lag_never_silently_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tail thread far behind sheds (index-only counting) and, past the hard bound, the
    # writer's callback stops queueing: either way delivered + lagged covers every match.
    import collector.pipeline.tail as tail

    monkeypatch.setattr(tail, "SHED_BACKLOG_EVENTS", 600)
    monkeypatch.setattr(tail, "MAX_BACKLOG_EVENTS", 2000)
    rng = random.Random(9)
    batches = []
    for b in range(60):
        cols = EventColumns()
        for n in range(200):
            e = make_event(rng, b * 1000 + n)
            cols.append(e["id"], 0, e["event"], e["resource"], e["related"], "{}")
        batches.append(cols)
    wanted = sum(1 for c in batches for name in c.names if name == "app.checkout.failed")

    async def run() -> tuple[list[int], list[int]]:
        hub = TailHub(asyncio.get_running_loop(), buffer=100_000, max_subscribers=10)
        subs = [hub.subscribe(parse_filter(None)), hub.subscribe(EXACT_NAME)]
        for cols in batches:
            hub.on_commit(cols, [1] * len(cols))
        deadline = time.monotonic() + 30
        while hub.backlog_events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        out = []
        for sub in subs:
            seen = missed = 0
            while True:
                try:
                    kind, item = await asyncio.wait_for(sub.next(), 0.05)
                except TimeoutError:
                    break
                if kind == "lagged":
                    missed += item
                else:
                    seen += 1
            out.append([seen, missed])
        hub.close()
        return out[0], out[1]

    everything, named = asyncio.run(run())
    # Match-all: exact either way. A name filter: a dropped batch is counted whole (its
    # columns were let go unread), so its count is an upper bound — never an undercount.
    assert sum(everything) == 60 * 200
    assert named[0] <= wanted <= sum(named)
    assert everything[1] > 0  # this run did shed or drop


EXACT_NAME = parse_filter({"event": {"name": ["app.checkout.failed"]}})
