"""Poison items: one bad item in a request is that item's error, never the request's or anyone
else's (issue 8, items 3 and 4; /work/shared/reference/robustness.md "Mixed batches").

Every test talks to a real server on 127.0.0.1:0 with a real DuckDB file, through real clients:
httpx for ``POST /api/events`` and OTLP/HTTP (protobuf and JSON), a raw gRPC channel for
``Emit`` and OTLP/gRPC (raw, so that bodies no well-behaved client would build — invalid UTF-8,
nesting past orjson's or protobuf's limits — reach the server unchanged).

The rules under test (docs/ingest.md "Validation", docs/otlp.md "Timestamps"):

* every time an event gets (an explicit ``occurred``, the time inside a UUIDv7 ``id``, OTLP
  start/end/time/observed times) lies between 2000-01-01T00:00:00Z and the server's clock plus
  ``limits.max_future_seconds`` (a day), else the item is rejected with a reason;
* a payload may nest at most ``MAX_PAYLOAD_DEPTH`` (128) levels; deeper is the item's error;
* a body that cannot be decoded at all (invalid UTF-8 or JSON, NaN, nesting past the decoder's
  own limit) is a 400 / INVALID_ARGUMENT that stores nothing; no input answers 500 or UNKNOWN.
"""

from __future__ import annotations

import base64
import gzip
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.events import MAX_PAYLOAD_DEPTH
from collector.domain.ids import uuid7_str
from collector.testing import running_herald, test_config

MAX_EVENT_BYTES = 20_000  # small, so "huge" items stay quick to send


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[Herald]:
    config = test_config(tmp_path / "herald.duckdb", limits={"max_event_bytes": MAX_EVENT_BYTES})
    with running_herald(config) as server:
        yield server


# --- native events --------------------------------------------------------------------------


def good(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "app.order.shipped",
        "resource": {"prefect.resource.id": "app.order.1"},
        "payload": {"carrier": "DHL"},
        "id": uuid7_str(),
    }
    event.update(over)
    return event


def nested(depth: int) -> dict[str, Any]:
    """A payload ``depth`` levels deep, the payload object itself being level 1."""
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def nested_json(depth: int) -> bytes:
    """``nested(depth)`` as JSON text, built by hand: orjson cannot write past 254 levels."""
    return b'{"k":' * (depth - 1) + b'{"leaf":true}' + b"}" * (depth - 1)


def uuid7_at(when: datetime) -> str:
    """A UUIDv7 whose 48-bit timestamp is ``when``."""
    ms = int(when.timestamp() * 1000)
    return uuid7_with_ms(ms)


def uuid7_with_ms(ms: int) -> str:
    value = (ms << 80) | (0x7 << 76) | (0b10 << 62) | int.from_bytes(os.urandom(7), "big")
    return str(uuid.UUID(int=value))


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def events_body(*items: dict[str, Any] | bytes) -> bytes:
    """A JSON array of ``items``; bytes items are spliced in as raw JSON text."""
    parts = [item if isinstance(item, bytes) else orjson.dumps(item) for item in items]
    return b"[" + b",".join(parts) + b"]"


@dataclass
class EmitReply:
    """What a native ingest call answered, the same shape for HTTP and gRPC."""

    errors: dict[int, str]  # per-item errors by index
    refused: str | None = None  # the whole body was refused (400 / INVALID_ARGUMENT)


def emit(herald: Herald, transport: str, body: bytes) -> EmitReply:
    """Send ``body`` (a JSON array of events) to ``POST /api/events`` or ``Emit``, unchanged."""
    if transport == "http":
        reply = httpx.post(
            f"http://{herald.http_address}/api/events",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert reply.status_code in (204, 400, 422), (reply.status_code, reply.text)
        if reply.status_code == 204:
            return EmitReply({})
        if reply.status_code == 400:
            return EmitReply({}, refused=reply.json()["detail"])
        return EmitReply({e["index"]: e["message"] for e in reply.json()["errors"]})
    with grpc.insecure_channel(herald.grpc_address) as channel:
        stub = herald_pb2_grpc.HeraldStub(channel)
        try:
            response = stub.Emit(herald_pb2.EmitRequest(events_json=body), timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
            return EmitReply({}, refused=exc.details())
    return EmitReply({e.index: e.message for e in response.errors})


def stored_ids(herald: Herald) -> set[str]:
    assert herald.store is not None
    rows = herald.store.cursor().execute("SELECT id::VARCHAR FROM events").fetchall()
    return {row[0] for row in rows}


@pytest.fixture(params=["http", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_uuid7_id_with_a_far_future_time_is_that_items_error(
    herald: Herald, transport: str
) -> None:
    before, after = good(), good()
    max_time = good(id="ffffffff-ffff-7fff-bfff-ffffffffffff")  # 48 bits of ms: year 10889
    two_days = good(id=uuid7_at(datetime.now(UTC) + timedelta(days=2)))
    reply = emit(herald, transport, events_body(before, max_time, two_days, after))
    assert set(reply.errors) == {1, 2}
    assert reply.errors[1].startswith("id: ")
    assert "10889-" in reply.errors[1] and "occurred" in reply.errors[1]
    assert "ahead of the server's clock" in reply.errors[2]
    assert stored_ids(herald) == {before["id"], after["id"]}


def test_uuid7_id_within_a_days_clock_skew_gives_occurred(herald: Herald, transport: str) -> None:
    when = datetime.now(UTC) + timedelta(hours=23)
    item = good(id=uuid7_at(when))
    assert emit(herald, transport, events_body(item)).errors == {}
    assert herald.store is not None
    event = herald.store.get_event(item["id"])
    assert event is not None
    assert abs(event.occurred - when) < timedelta(milliseconds=2)


def test_occurred_outside_the_accepted_range_is_that_items_error(
    herald: Herald, transport: str
) -> None:
    now = datetime.now(UTC)
    items = [
        good(occurred=iso(now + timedelta(hours=23))),  # 0: within the allowance
        good(occurred="2000-01-01T00:00:00Z"),  # 1: the earliest accepted time
        good(occurred=iso(now + timedelta(days=2))),  # 2
        good(occurred="9999-12-31T23:59:59.999999Z"),  # 3
        good(occurred="9999-12-31T23:59:59-01:00"),  # 4: past datetime's range once in UTC
        good(occurred="1999-12-31T23:59:59.999999Z"),  # 5
        good(occurred="1969-07-20T20:17:00Z"),  # 6
        good(occurred="0001-01-01T00:00:00+01:00"),  # 7: before year 1 once in UTC
        good(id=uuid7_with_ms(0)),  # 8: a UUIDv7 stamped at the Unix epoch
        good(),  # 9
    ]
    reply = emit(herald, transport, events_body(*items))
    assert set(reply.errors) == {2, 3, 4, 5, 6, 7, 8}
    for i in (2, 3, 4):
        assert reply.errors[i].startswith("occurred: ")
        assert "ahead of the server's clock" in reply.errors[i]
    for i in (5, 6, 7):
        assert reply.errors[i].startswith("occurred: ")
        assert "before 2000-01-01T00:00:00Z" in reply.errors[i]
    assert reply.errors[8].startswith("id: ") and "1970-01-01" in reply.errors[8]
    assert stored_ids(herald) == {items[i]["id"] for i in (0, 1, 9)}


def test_payload_nesting_is_limited_per_item(herald: Herald, transport: str) -> None:
    first, last = good(), good()
    at_limit = good(payload=nested(MAX_PAYLOAD_DEPTH))
    ids = [uuid7_str() for _ in range(4)]

    def deep(i: int, depth: int) -> bytes:
        event = orjson.dumps(good(id=ids[i], payload={}))
        return event.replace(b'"payload":{}', b'"payload":' + nested_json(depth))

    body = events_body(
        first,
        at_limit,
        deep(0, MAX_PAYLOAD_DEPTH + 1),
        deep(1, 254),  # orjson writes at most 254 levels: the 500 of issue 8, item 4
        deep(2, 255),
        deep(3, 1022),  # the array and the event object make 1,024: orjson's parsing limit
        last,
    )
    reply = emit(herald, transport, body)
    assert set(reply.errors) == {2, 3, 4, 5}
    for message in reply.errors.values():
        assert message == f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    assert stored_ids(herald) == {first["id"], at_limit["id"], last["id"]}
    assert herald.store is not None
    stored = herald.store.get_event(at_limit["id"])
    assert stored is not None and stored.payload == at_limit["payload"]
    # ... and can be read back through the feed, inside the event and the page around it
    page = httpx.post(f"http://{herald.http_address}/api/events/filter", json={}, timeout=30)
    assert page.status_code == 200
    served = {e["id"]: e for e in page.json()["events"]}
    assert served[at_limit["id"]]["payload"] == at_limit["payload"]
    with HeraldClient(herald.grpc_address) as client:
        events = client.query(None)["events"]
    assert {e["id"] for e in events} == stored_ids(herald)


def test_nesting_past_the_json_decoders_limit_refuses_the_body(
    herald: Herald, transport: str
) -> None:
    event = orjson.dumps(good(payload={}))
    body = events_body(good(), event.replace(b'"payload":{}', b'"payload":' + nested_json(1023)))
    reply = emit(herald, transport, body)
    assert reply.refused is not None and "not valid JSON" in reply.refused
    assert stored_ids(herald) == set()


BODIES_THAT_ARE_NOT_JSON = {
    "invalid-utf8": b'[{"event": "a\xff\xfe", "resource": {"prefect.resource.id": "r"}}]',
    "nan": b'[{"event": "a", "resource": {"prefect.resource.id": "r"}, "payload": {"x": NaN}}]',
    "infinity": b'[{"event": "a", "resource": {"prefect.resource.id": "r"}, "occurred": 1e999}]',
    "lone-surrogate": b'[{"event": "\\ud800", "resource": {"prefect.resource.id": "r"}}]',
    "truncated": b'[{"event": "a", "resource": {"prefect.resource.id": "r"}',
}


@pytest.mark.parametrize("kind", BODIES_THAT_ARE_NOT_JSON)
def test_body_that_is_not_json_is_refused_whole(herald: Herald, transport: str, kind: str) -> None:
    body = events_body(good()).replace(b"]", b"," + BODIES_THAT_ARE_NOT_JSON[kind][1:])
    reply = emit(herald, transport, body)
    assert reply.refused is not None and reply.refused.startswith("body is not valid JSON")
    assert stored_ids(herald) == set()


def test_mixed_batch_rejects_only_the_bad_items(herald: Herald, transport: str) -> None:
    """One good item next to every kind of bad one; control characters and duplicate keys are
    data (JSON allows them; the last duplicate wins, as in every JSON decoder Herald uses)."""
    now = datetime.now(UTC)
    control = good(
        event="app.\x00\x07\x1b[31m.\u2028",
        resource={"prefect.resource.id": "r\x00", "k\x01": "\x7f"},
        payload={"\x00": "\ud7ff\x1f"},
    )
    duplicate_id = uuid7_str()
    duplicate_keys = (
        b'{"event":"first","event":"app.dup","resource":{"prefect.resource.id":"r"},'
        b'"payload":{"a":1,"a":2},"id":"' + duplicate_id.encode() + b'"}'
    )
    items: list[dict[str, Any] | bytes] = [
        good(),  # 0
        good(resource=["prefect.resource.id", "r"]),  # 1: wrong type
        good(payload=[1, 2]),  # 2: wrong type
        good(event=17),  # 3: wrong type
        good(occurred=1_700_000_000),  # 4: wrong type
        orjson.dumps(good(payload={})).replace(b'"payload":{}', b'"payload":' + nested_json(300)),
        good(payload={"text": "x" * MAX_EVENT_BYTES}),  # 6: huge string
        good(resource={"prefect.resource.id": "r", "big": "y" * MAX_EVENT_BYTES}),  # 7
        good(event="e" * 1025),  # 8: name over the limit
        good(occurred=iso(now + timedelta(days=400))),  # 9: far-future time
        good(id="ffffffff-ffff-7fff-bfff-ffffffffffff"),  # 10: far-future time in the id
        good(id="not-a-uuid"),  # 11
        good(related=[{"prefect.resource.id": "x"}]),  # 12: related without a role
        b'"not an object"',  # 13
        b"null",  # 14
        control,  # 15: accepted
        duplicate_keys,  # 16: accepted
        good(payload={"big": 2**63 - 1, "small": -(2**63), "float": 1e308}),  # 17: accepted
    ]
    reply = emit(herald, transport, events_body(*items))
    assert set(reply.errors) == set(range(1, 15)), reply.errors
    assert "nested deeper than" in reply.errors[5]
    assert "bytes of JSON" in reply.errors[6] and "bytes of JSON" in reply.errors[7]
    for message in reply.errors.values():
        assert "Error" not in message and "Traceback" not in message  # no class names leaked
    first, last = items[0], items[17]
    assert isinstance(first, dict) and isinstance(last, dict)
    good_ids = [first["id"], control["id"], duplicate_id, last["id"]]
    assert stored_ids(herald) == set(good_ids)
    assert herald.store is not None
    stored = herald.store.get_event(control["id"])
    assert stored is not None
    assert (stored.event, stored.resource, stored.payload) == (
        control["event"],
        control["resource"],
        control["payload"],
    )
    dup = herald.store.get_event(duplicate_id)
    assert dup is not None and dup.event == "app.dup" and dup.payload == {"a": 2}


@pytest.mark.slow
def test_good_clients_never_fail_next_to_a_client_sending_poison(herald: Herald) -> None:
    """Four clients send good batches while a fifth sends far-future and deep items: the good
    clients see no failure (the poison never reaches the shared group commit)."""
    failures: list[str] = []
    hostile_replies: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()
    far_future = good(id="ffffffff-ffff-7fff-bfff-ffffffffffff")
    deep = orjson.dumps(good(payload={})).replace(b'"payload":{}', b'"payload":' + nested_json(300))

    def good_client(transport: str) -> None:
        for _ in range(40):
            batch = [good() for _ in range(5)]
            try:
                reply = emit(herald, transport, events_body(*batch))
                if reply.errors or reply.refused:
                    failures.append(str(reply))
            except AssertionError as exc:  # any other status
                failures.append(str(exc))
            with lock:
                sent.extend(e["id"] for e in batch)

    def hostile_client() -> None:
        for i in range(80):
            poison = events_body(far_future) if i % 2 else events_body(good(), deep)
            try:
                reply = emit(herald, "http" if i % 4 < 2 else "grpc", poison)
                hostile_replies.append(str(sorted(reply.errors)))
            except AssertionError as exc:
                hostile_replies.append(str(exc))

    threads = [threading.Thread(target=good_client, args=(t,)) for t in ("http", "grpc") * 2]
    threads.append(threading.Thread(target=hostile_client))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert set(hostile_replies) == {"[0]", "[1]"}
    assert stored_ids(herald) >= set(sent)


# --- OTLP -------------------------------------------------------------------------------------

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
DAY_NS = 86_400 * 10**9


def now_ns() -> int:
    return int(datetime.now(UTC).timestamp() * 10**9)


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def spans_request(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """One resource and scope; each dict gives a span's fields over sane defaults."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", AnyValue(string_value="poison-test")))
    ss = rs.scope_spans.add()
    ss.scope.name = "poison"
    t = now_ns() - 10**9
    for i, fields in enumerate(spans):
        fields = dict(fields)
        attributes = fields.pop("attributes", [])
        events = fields.pop("events", [])
        span = ss.spans.add(
            trace_id=TRACE_ID,
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"op-{i}",
            start_time_unix_nano=t,
            end_time_unix_nano=t + 1000,
        )
        for key, value in fields.items():
            setattr(span, key, value)
        span.attributes.extend(attributes)
        for name, time in events:
            span.events.add(name=name, time_unix_nano=time)
    return request


def logs_request(records: list[dict[str, Any]]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", AnyValue(string_value="poison-test")))
    sl = rl.scope_logs.add()
    t = now_ns() - 10**9
    for i, fields in enumerate(records):
        fields = dict(fields)
        body = fields.pop("body", None)
        record = sl.log_records.add(time_unix_nano=t, severity_number=9)
        for key, value in fields.items():
            setattr(record, key, value)
        if body is not None:
            record.body.CopyFrom(body)
        else:
            record.body.string_value = f"record {i}"
    return request


def otlp_json(message: Any) -> bytes:
    """What a spec-conformant OTLP/JSON exporter sends: proto3 JSON with ids in hex."""
    data = json_format.MessageToDict(message)

    def fix(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    obj[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(obj, list):
            for item in obj:
                fix(item)

    fix(data)
    return orjson.dumps(data)


@dataclass
class OtlpReply:
    rejected: int
    message: str
    refused: str | None = None  # 400 / INVALID_ARGUMENT for the whole request


OTLP_TRANSPORTS = ["grpc", "http-protobuf", "http-json"]
OtlpResponse = ExportTraceServiceResponse | ExportLogsServiceResponse


def export(herald: Herald, transport: str, signal: str, body: bytes) -> OtlpReply:
    """Send serialized OTLP ``body`` (protobuf; converted for http-json) as it is."""
    traces = signal == "traces"
    response_type: type[OtlpResponse] = (
        ExportTraceServiceResponse if traces else ExportLogsServiceResponse
    )
    if transport == "grpc":
        service = "trace.v1.TraceService" if traces else "logs.v1.LogsService"
        with grpc.insecure_channel(herald.grpc_address) as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, OtlpResponse] = channel.unary_unary(
                f"/opentelemetry.proto.collector.{service}/Export",
                request_serializer=None,
                response_deserializer=response_type.FromString,
            )
            try:
                response = call(body, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
                return OtlpReply(0, "", refused=exc.details())
        return partial_success(response)
    content_type = "application/json" if transport == "http-json" else "application/x-protobuf"
    reply = httpx.post(
        f"http://{herald.http_address}/v1/{signal}",
        content=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert reply.status_code in (200, 400), (reply.status_code, reply.content[:300])
    if reply.status_code == 400:
        if transport == "http-json":
            return OtlpReply(0, "", refused=reply.json()["message"])
        from google.rpc import status_pb2

        return OtlpReply(0, "", refused=status_pb2.Status.FromString(reply.content).message)
    if transport == "http-json":
        ps = reply.json().get("partialSuccess", {})
        key = "rejectedSpans" if traces else "rejectedLogRecords"
        return OtlpReply(int(ps.get(key, 0)), ps.get("errorMessage", ""))
    return partial_success(response_type.FromString(reply.content))


def partial_success(response: OtlpResponse) -> OtlpReply:
    """What an OTLP export response says it rejected (spans or log records)."""
    if isinstance(response, ExportTraceServiceResponse):
        ps_traces = response.partial_success
        return OtlpReply(ps_traces.rejected_spans, ps_traces.error_message)
    ps_logs = response.partial_success
    return OtlpReply(ps_logs.rejected_log_records, ps_logs.error_message)


def send(herald: Herald, transport: str, request: Any) -> OtlpReply:
    signal = "traces" if isinstance(request, ExportTraceServiceRequest) else "logs"
    body = otlp_json(request) if transport == "http-json" else request.SerializeToString()
    return export(herald, transport, signal, body)


def stored_names(herald: Herald) -> list[str]:
    assert herald.store is not None
    rows = herald.store.cursor().execute("SELECT event FROM events ORDER BY event").fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("transport", OTLP_TRANSPORTS)
def test_spans_with_absurd_times_are_rejected_one_by_one(herald: Herald, transport: str) -> None:
    t = now_ns()
    request = spans_request(
        [
            {},  # 0: good
            {"start_time_unix_nano": 1},  # 1: 1970 (seconds sent as nanoseconds, say)
            {"end_time_unix_nano": 2**64 - 1},  # 2: year 2554
            {"start_time_unix_nano": t + 2 * DAY_NS, "end_time_unix_nano": t + 2 * DAY_NS},
            {"start_time_unix_nano": 0, "end_time_unix_nano": 0},  # 4: unknown: received
            {"events": [("late", t + 3 * DAY_NS), ("fine", t)]},  # 5: kept without "late"
            {"start_time_unix_nano": t + DAY_NS // 2, "end_time_unix_nano": t + DAY_NS // 2},
        ]
    )
    reply = send(herald, transport, request)
    assert reply.refused is None
    assert reply.rejected == 3
    assert "span 1 of scope 0 of resource 0" in reply.message
    assert "before 2000-01-01T00:00:00Z" in reply.message
    assert "2554-" in reply.message and "ahead of the server's clock" in reply.message
    assert "span 5 of scope 0 of resource 0 ('op-5'), event 0" in reply.message
    names = stored_names(herald)
    assert names.count("otel.span.unset") == 4 and "fine" in names and "late" not in names


@pytest.mark.parametrize("transport", OTLP_TRANSPORTS)
def test_log_records_with_absurd_times_are_rejected_one_by_one(
    herald: Herald, transport: str
) -> None:
    t = now_ns()
    request = logs_request(
        [
            {},  # 0: good
            {"time_unix_nano": 2**64 - 1},  # 1
            {"time_unix_nano": 0, "observed_time_unix_nano": 1_000_000_000},  # 2: 1970
            {"observed_time_unix_nano": t + 2 * DAY_NS},  # 3: observed far ahead
            {"time_unix_nano": 0, "observed_time_unix_nano": 0},  # 4: unknown: received
            {"time_unix_nano": 946_684_799_999_999_999},  # 5: 1 ns before 2000
            {"time_unix_nano": 946_684_800_000_000_000},  # 6: exactly 2000-01-01
        ]
    )
    reply = send(herald, transport, request)
    assert reply.refused is None
    assert reply.rejected == 4
    assert "log record 1 of scope 0 of resource 0" in reply.message
    assert "observed_time_unix_nano" in reply.message
    assert herald.store is not None
    assert herald.store.count_events() == 3


def deep_any_value(depth: int) -> bytes:
    """A serialized AnyValue of ``depth`` nested arrays, written by hand: the protobuf runtime
    refuses to build (or parse) messages nested past its recursion limit."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    value = field(1, b"leaf")  # string_value
    for _ in range(depth):
        value = field(5, field(1, value))  # array_value { values: value }
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def logs_with_body(*bodies: bytes) -> bytes:
    """A serialized ExportLogsServiceRequest: one record per serialized AnyValue body."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    t = now_ns()
    records = b"".join(
        field(2, _varint(1 << 3 | 1) + struct.pack("<Q", t + i) + field(5, body))
        for i, body in enumerate(bodies)
    )
    return field(1, field(2, records))


@pytest.mark.parametrize("transport", ["grpc", "http-protobuf"])
def test_deep_any_value_is_stored_within_protobufs_limit_and_refused_past_it(
    herald: Herald, transport: str
) -> None:
    leaf = deep_any_value(0)
    reply = export(herald, transport, "logs", logs_with_body(leaf, deep_any_value(40)))
    assert (reply.refused, reply.rejected) == (None, 0)
    assert herald.store is not None and herald.store.count_events() == 2
    for depth in (100, 20_000):
        reply = export(herald, transport, "logs", logs_with_body(leaf, deep_any_value(depth)))
        assert reply.refused is not None and "not a valid ExportLogsServiceRequest" in reply.refused
    assert herald.store.count_events() == 2


def test_deep_any_value_in_otlp_json_is_refused_not_500(herald: Herald) -> None:
    def body(depth: int) -> bytes:
        value = b'{"arrayValue":{"values":[' * depth + b'{"stringValue":"x"}' + b"]}}" * depth
        return b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + b"}]}]}]}"

    assert export(herald, "http-json", "logs", body(30)).refused is None
    for depth in (60, 400, 5_000):
        reply = export(herald, "http-json", "logs", body(depth))
        assert reply.refused is not None and reply.refused.startswith("OTLP/JSON logs request")
    assert herald.store is not None and herald.store.count_events() == 1


@pytest.mark.parametrize("transport", OTLP_TRANSPORTS)
def test_otlp_mixed_batch_rejects_only_the_bad_spans(herald: Herald, transport: str) -> None:
    nan = AnyValue(double_value=float("nan"))
    inf = AnyValue(double_value=float("-inf"))
    control = AnyValue(string_value="\x00\x1b[31m\u2028")
    nested = AnyValue()
    inner = nested
    for _ in range(20):
        inner = inner.kvlist_value.values.add(key="k").value
    inner.string_value = "leaf"
    request = spans_request(
        [
            {},  # 0: good
            {"trace_id": bytes(16)},  # 1: zero trace id
            {"span_id": b"\x01" * 7},  # 2: short span id
            {"end_time_unix_nano": 2**63},  # 3: far future
            {"attributes": [kv("nan", nan), kv("inf", inf), kv("ctl", control)]},  # 4: kept
            {"attributes": [kv("deep", nested)], "name": "\x00\x07"},  # 5: kept
            {"attributes": [kv("big", AnyValue(string_value="z" * MAX_EVENT_BYTES))]},  # 6
        ]
    )
    reply = send(herald, transport, request)
    assert reply.refused is None
    assert reply.rejected == 4, reply.message
    assert herald.store is not None
    rows = (
        herald.store.cursor()
        .execute("SELECT related->0->>'prefect.resource.name' FROM events ORDER BY 1")
        .fetchall()
    )
    assert sorted(r[0] for r in rows) == sorted(["op-0", "op-4", "\x00\x07"])


@pytest.mark.parametrize("transport", OTLP_TRANSPORTS)
def test_otlp_body_with_invalid_utf8_is_refused_whole(herald: Herald, transport: str) -> None:
    placeholder = "PLACEHOLDER-STRING"
    request = logs_request([{}, {"body": AnyValue(string_value=placeholder)}])
    body = otlp_json(request) if transport == "http-json" else request.SerializeToString()
    bad = body.replace(placeholder.encode(), b"\xff\xfe" + b"x" * (len(placeholder) - 2))
    reply = export(herald, transport, "logs", bad)
    assert reply.refused is not None
    assert herald.store is not None and herald.store.count_events() == 0


def test_otlp_json_with_nan_literal_is_refused_and_nan_string_is_stored(herald: Herald) -> None:
    request = logs_request([{"body": AnyValue(double_value=float("nan"))}])
    body = otlp_json(request)
    assert b'"NaN"' in body  # proto3 JSON's spelling, which OTLP/JSON senders use
    assert export(herald, "http-json", "logs", body).refused is None
    reply = export(herald, "http-json", "logs", body.replace(b'"NaN"', b"NaN"))
    assert reply.refused is not None and "not valid JSON" in reply.refused
    assert herald.store is not None and herald.store.count_events() == 1
    stored = herald.store.cursor().execute("SELECT payload->>'body' FROM events").fetchone()
    assert stored == (None,)  # NaN has no JSON form: stored as null


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1])
def test_payload_nesting_limit_holds_for_gzip_bodies(herald: Herald, depth: int) -> None:
    item = good(payload={})
    raw = events_body(
        orjson.dumps(item).replace(b'"payload":{}', b'"payload":' + nested_json(depth))
    )
    reply = httpx.post(
        f"http://{herald.http_address}/api/events",
        content=gzip.compress(raw),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    if depth <= MAX_PAYLOAD_DEPTH:
        assert reply.status_code == 204
        assert stored_ids(herald) == {item["id"]}
    else:
        assert reply.status_code == 422
        assert reply.json()["errors"] == [
            {"index": 0, "message": f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels"}
        ]
        assert stored_ids(herald) == set()
