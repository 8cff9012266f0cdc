"""OTLP spans and span events → events (SPEC §4), on real opentelemetry-proto messages."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.domain.events import MAX_PAYLOAD_DEPTH, Limits
from collector.domain.ids import derived_uuid
from collector.errors import InvalidEvent
from collector.mapping.otlp_common import (
    MAX_REASONS,
    UNEXPECTED,
    MappingResult,
    any_value,
    attributes_to_labels,
    derived_id,
    iso_from_us,
)
from collector.mapping.otlp_traces import traces_to_events

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
LINK_TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
LINK_SPAN = bytes.fromhex("b7ad6b7169203331")
START = 1_700_000_000_123_456_789  # ns
END = START + 12_345_678
RECEIVED = 1_800_000_000_000_000  # us
LIMITS = Limits()


def av(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (tuples → arrays, dicts → kvlists)."""
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(av(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(kvs(value))
        return out
    return AnyValue(string_value=value)


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=av(v)) for k, v in attrs.items()]


def make_span(**fields: Any) -> Span:
    attrs = fields.pop("attributes", {})
    events = fields.pop("events", [])
    links = fields.pop("links", [])
    status = fields.pop("status", None)
    base: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "name": "GET /orders",
        "kind": Span.SPAN_KIND_SERVER,
        "start_time_unix_nano": START,
        "end_time_unix_nano": END,
    }
    base.update(fields)
    span = Span(**base)
    span.attributes.extend(kvs(attrs))
    if status is not None:
        span.status.CopyFrom(status)
    for ev in events:
        ev = dict(ev)
        e = span.events.add(name=ev.pop("name"), time_unix_nano=ev.pop("time", 0))
        e.attributes.extend(kvs(ev.pop("attributes", {})))
    for link in links:
        span.links.add(**link)
    return span


def make_request(
    *spans: Span,
    resource: dict[str, Any] | None = None,
    scope: tuple[str, str] | None = ("checkout.instrumentation", "1.2.0"),
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attrs = {"service.name": "checkout"} if resource is None else resource
    rs.resource.attributes.extend(kvs(attrs))
    ss = rs.scope_spans.add()
    if scope:
        ss.scope.name, ss.scope.version = scope
    ss.spans.extend(spans)
    return req


def mapped(req: ExportTraceServiceRequest, limits: Limits = LIMITS) -> MappingResult:
    return traces_to_events(req, RECEIVED, limits)


def event(result: MappingResult, i: int) -> dict[str, Any]:
    """Event ``i`` of a result as a plain dict (what the store will hold)."""
    c = result.columns
    return {
        "id": c.ids[i],
        "occurred_us": c.occurred_us[i],
        "event": c.names[i],
        "resource": c.resource(i),
        "related": c.related_resources(i),
        "payload": orjson.loads(c.payloads[i]),
    }


# --- spans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (Status.STATUS_CODE_UNSET, "otel.span.unset"),
        (Status.STATUS_CODE_OK, "otel.span.ok"),
        (Status.STATUS_CODE_ERROR, "otel.span.error"),
        (7, "otel.span.unset"),  # proto3 enums are open: unknown codes read as unset
    ],
)
def test_span_event_name_follows_status_code(code: Status.StatusCode.ValueType, name: str) -> None:
    result = mapped(make_request(make_span(status=Status(code=code, message="m"))))
    assert event(result, 0)["event"] == name


def test_span_maps_every_field() -> None:
    span = make_span(
        parent_span_id=PARENT,
        trace_state="congo=t61rcWkgMzE",
        flags=0x301,
        dropped_attributes_count=1,
        dropped_events_count=2,
        dropped_links_count=3,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        attributes={"http.method": "GET", "http.status_code": 500, "retry": True},
        links=[{"trace_id": LINK_TRACE, "span_id": LINK_SPAN}],
    )
    resource = {"service.name": "checkout", "service.namespace": "shop", "replicas": 3}
    result = mapped(make_request(span, resource=resource))
    assert len(result.columns) == 1
    assert result.rejected == 0 and result.reasons == []
    ev = event(result, 0)
    assert ev["event"] == "otel.span.error"
    assert ev["resource"] == {
        "prefect.resource.id": "otel.service.shop.checkout",
        "prefect.resource.name": "checkout",
        "service.name": "checkout",
        "service.namespace": "shop",
        "replicas": "3",
    }
    assert ev["related"] == [
        {
            "prefect.resource.id": "otel.span.eee19b7ec3c1b174",
            "prefect.resource.role": "span",
            "prefect.resource.name": "GET /orders",
            "otel.span.kind": "server",
            "otel.trace_id": "5b8efff798038103d269b633813fc60c",
            "http.method": "GET",
            "http.status_code": "500",
            "retry": "true",
        },
        {
            "prefect.resource.id": "otel.trace.5b8efff798038103d269b633813fc60c",
            "prefect.resource.role": "trace",
        },
        {
            "prefect.resource.id": "otel.span.eee19b7ec3c1b173",
            "prefect.resource.role": "parent-span",
        },
        {
            "prefect.resource.id": "otel.scope.checkout.instrumentation",
            "prefect.resource.role": "scope",
            "otel.scope.version": "1.2.0",
        },
        {
            "prefect.resource.id": "otel.span.b7ad6b7169203331",
            "prefect.resource.role": "link",
            "otel.trace_id": "0af7651916cd43dd8448eb211c80319c",
        },
    ]
    assert ev["payload"] == {
        "kind": "server",
        "status": {"code": "error", "message": "boom"},
        "start_time": "2023-11-14T22:13:20.123456Z",
        "end_time": "2023-11-14T22:13:20.135802Z",
        "duration_ms": 12.345678,
        "trace_state": "congo=t61rcWkgMzE",
        "flags": 0x301,
        "dropped_attributes_count": 1,
        "dropped_events_count": 2,
        "dropped_links_count": 3,
    }
    assert ev["occurred_us"] == END // 1000
    assert ev["id"] == derived_uuid(b"span", TRACE, SPAN)


def test_payload_key_order_is_stable() -> None:
    payload = orjson.loads(mapped(make_request(make_span())).columns.payloads[0])
    assert list(payload) == [
        "kind",
        "status",
        "start_time",
        "end_time",
        "duration_ms",
        "trace_state",
        "flags",
        "dropped_attributes_count",
        "dropped_events_count",
        "dropped_links_count",
    ]


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        (0, "unspecified"),
        (1, "internal"),
        (2, "server"),
        (3, "client"),
        (4, "producer"),
        (5, "consumer"),
        (42, "unspecified"),
    ],
)
def test_span_kind_label(kind: int, label: str) -> None:
    ev = event(mapped(make_request(make_span(kind=kind))), 0)
    assert ev["related"][0]["otel.span.kind"] == label
    assert ev["payload"]["kind"] == label


def test_resource_without_namespace_and_missing_service_name() -> None:
    ev = event(mapped(make_request(make_span(), resource={"service.name": "web"})), 0)
    assert ev["resource"]["prefect.resource.id"] == "otel.service.web"
    ev = event(mapped(make_request(make_span(), resource={"host.name": "n1"})), 0)
    assert ev["resource"] == {
        "prefect.resource.id": "otel.service.unknown_service",
        "prefect.resource.name": "unknown_service",
        "host.name": "n1",
    }
    ev = event(mapped(make_request(make_span(), resource={"service.name": ""})), 0)
    assert ev["resource"]["prefect.resource.id"] == "otel.service.unknown_service"


def test_non_string_labels_are_json_encoded() -> None:
    attrs = {
        "i": -7,
        "f": 1.5,
        "b": False,
        "arr": ["a", 1, True],
        "kv": {"x": 1, "y": ["z"]},
        "raw": b"\x00\xff",
        "empty_string": "",
        "no_value": AnyValue(),
    }
    ev = event(mapped(make_request(make_span(attributes=attrs), resource=attrs)), 0)
    expected = {
        "i": "-7",
        "f": "1.5",
        "b": "false",
        "arr": '["a",1,true]',
        "kv": '{"x":1,"y":["z"]}',
        "raw": "AP8=",  # bytes: base64, the typed JSON value, already a string
        "empty_string": "",
        "no_value": "null",
    }
    assert {k: ev["resource"][k] for k in expected} == expected
    assert {k: ev["related"][0][k] for k in expected} == expected


def test_root_span_and_zero_parent_have_no_parent_related() -> None:
    for parent in (b"", bytes(8)):
        ev = event(mapped(make_request(make_span(parent_span_id=parent))), 0)
        assert [r["prefect.resource.role"] for r in ev["related"]] == ["span", "trace", "scope"]


def test_scope_without_name_is_not_related_and_version_is_optional() -> None:
    ev = event(mapped(make_request(make_span(), scope=None)), 0)
    assert [r["prefect.resource.role"] for r in ev["related"]] == ["span", "trace"]
    ev = event(mapped(make_request(make_span(), scope=("lib", ""))), 0)
    assert ev["related"][-1] == {
        "prefect.resource.id": "otel.scope.lib",
        "prefect.resource.role": "scope",
    }


def test_links_without_a_valid_span_id_are_skipped() -> None:
    links = [
        {"trace_id": LINK_TRACE, "span_id": bytes(8)},
        {"trace_id": LINK_TRACE, "span_id": b"\x01\x02"},
        {"trace_id": b"", "span_id": LINK_SPAN},  # no trace: related without otel.trace_id
    ]
    ev = event(mapped(make_request(make_span(links=links))), 0)
    assert ev["related"][-1] == {
        "prefect.resource.id": "otel.span.b7ad6b7169203331",
        "prefect.resource.role": "link",
    }
    assert len(ev["related"]) == 4


def test_occurred_falls_back_to_start_then_received() -> None:
    ev = event(mapped(make_request(make_span(end_time_unix_nano=0))), 0)
    assert ev["occurred_us"] == START // 1000
    assert ev["payload"]["end_time"] is None and ev["payload"]["duration_ms"] is None
    ev = event(mapped(make_request(make_span(start_time_unix_nano=0, end_time_unix_nano=0))), 0)
    assert ev["occurred_us"] == RECEIVED
    assert ev["payload"]["start_time"] is None


def test_times_use_integer_maths() -> None:
    # 2**63 - 1 ns would lose microseconds through a float
    ns = 9_223_372_036_854_775_807
    span = make_span(start_time_unix_nano=ns - 1000, end_time_unix_nano=ns)
    # year 2262: accepted only with a generous allowance for times ahead of the clock
    limits = Limits(max_future_seconds=1e10)
    ev = event(mapped(make_request(span), limits), 0)
    assert ev["occurred_us"] == 9_223_372_036_854_775
    assert ev["payload"]["end_time"] == "2262-04-11T23:47:16.854775Z"


def test_ids_are_deterministic_and_distinct() -> None:
    req = make_request(make_span(), make_span(span_id=PARENT))
    a, b = mapped(req), mapped(req)
    assert a.columns.ids == b.columns.ids
    assert len(set(a.columns.ids)) == 2
    assert a.columns.ids[1] == derived_uuid(b"span", TRACE, PARENT)


def test_request_with_many_resources_and_scopes() -> None:
    req = ExportTraceServiceRequest()
    for service in ("a", "b"):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(kvs({"service.name": service}))
        for scope in ("s1", "s2"):
            ss = rs.scope_spans.add()
            ss.scope.name = scope
            ss.spans.append(make_span(span_id=os.urandom(7) + b"\x01"))
    result = mapped(req)
    assert [event(result, i)["resource"]["prefect.resource.id"] for i in range(4)] == [
        "otel.service.a",
        "otel.service.a",
        "otel.service.b",
        "otel.service.b",
    ]
    assert [event(result, i)["related"][2]["prefect.resource.id"] for i in range(4)] == [
        "otel.scope.s1",
        "otel.scope.s2",
        "otel.scope.s1",
        "otel.scope.s2",
    ]


def test_empty_request_maps_to_nothing() -> None:
    result = mapped(ExportTraceServiceRequest())
    assert len(result.columns) == 0 and result.rejected == 0 and result.error_message() == ""


# --- span events ---------------------------------------------------------------------------


def test_span_event_maps_to_its_own_event() -> None:
    span = make_span(
        attributes={"http.method": "GET"},
        parent_span_id=PARENT,
        events=[
            {
                "name": "exception",
                "time": START + 5_000,
                "attributes": {
                    "exception.type": "ValueError",
                    "exception.message": "bad",
                    "count": 3,
                    "ok": False,
                    "ratio": 0.25,
                    "tags": ["a", "b"],
                    "ctx": {"k": 1},
                    "blob": b"hi",
                },
            }
        ],
    )
    result = mapped(make_request(span))
    assert len(result.columns) == 2
    span_ev, ev = event(result, 0), event(result, 1)
    assert ev["event"] == "exception"
    assert ev["resource"] == span_ev["resource"]
    # the span without its attributes (they stay on the span's own event), trace, scope
    assert ev["related"] == [
        {
            "prefect.resource.id": "otel.span.eee19b7ec3c1b174",
            "prefect.resource.role": "span",
            "prefect.resource.name": "GET /orders",
            "otel.span.kind": "server",
            "otel.trace_id": "5b8efff798038103d269b633813fc60c",
        },
        {
            "prefect.resource.id": "otel.trace.5b8efff798038103d269b633813fc60c",
            "prefect.resource.role": "trace",
        },
        {
            "prefect.resource.id": "otel.scope.checkout.instrumentation",
            "prefect.resource.role": "scope",
            "otel.scope.version": "1.2.0",
        },
    ]
    assert ev["payload"] == {
        "exception.type": "ValueError",
        "exception.message": "bad",
        "count": 3,
        "ok": False,
        "ratio": 0.25,
        "tags": ["a", "b"],
        "ctx": {"k": 1},
        "blob": "aGk=",
        "span_name": "GET /orders",
    }
    assert ev["occurred_us"] == (START + 5_000) // 1000
    assert ev["id"] == derived_uuid(b"span-event", TRACE, SPAN, (0).to_bytes(4, "big"))


def test_span_event_ids_use_the_index_and_time_falls_back_to_the_span() -> None:
    span = make_span(events=[{"name": "a"}, {"name": "a"}])
    result = mapped(make_request(span))
    ids = result.columns.ids
    assert len(set(ids)) == 3
    assert ids[2] == derived_uuid(b"span-event", TRACE, SPAN, (1).to_bytes(4, "big"))
    assert event(result, 1)["occurred_us"] == END // 1000


def test_span_name_key_wins_over_an_attribute() -> None:
    span = make_span(events=[{"name": "e", "attributes": {"span_name": "theirs"}}])
    assert event(mapped(make_request(span)), 1)["payload"] == {"span_name": "GET /orders"}


def test_bad_span_event_is_dropped_with_a_warning_and_the_span_kept() -> None:
    span = make_span(events=[{"name": ""}, {"name": "x" * 30}, {"name": "ok"}])
    result = mapped(make_request(span), Limits(max_event_name_length=20))
    assert [event(result, i)["event"] for i in range(len(result.columns))] == [
        "otel.span.unset",
        "ok",
    ]
    assert result.rejected == 0  # a warning in OTLP terms: the span itself was stored
    assert len(result.reasons) == 2
    assert "event 0" in result.reasons[0] and "event 1" in result.reasons[1]
    assert "1 to 20 characters" in result.reasons[1]
    # the stored event keeps its index-derived id
    assert result.columns.ids[1] == derived_uuid(b"span-event", TRACE, SPAN, (2).to_bytes(4, "big"))


# --- rejects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": bytes(16)}, "trace_id must be 16 bytes, not all zero"),
        ({"trace_id": b""}, "trace_id must be 16 bytes, not all zero"),
        ({"trace_id": TRACE[:8]}, "trace_id must be 16 bytes, not all zero"),
        ({"span_id": bytes(8)}, "span_id must be 8 bytes, not all zero"),
        ({"span_id": SPAN + b"\x00"}, "span_id must be 8 bytes, not all zero"),
        ({"parent_span_id": b"\x01"}, "parent_span_id must be empty or 8 bytes"),
    ],
)
def test_invalid_span_is_rejected_and_the_rest_mapped(fields: dict[str, Any], reason: str) -> None:
    bad = make_span(name="bad", events=[{"name": "e"}], **fields)
    result = mapped(make_request(make_span(), bad, make_span(span_id=PARENT)))
    assert result.rejected == 1
    assert result.reasons == [f"span 1 of scope 0 of resource 0 ('bad'): {reason}"]
    assert result.columns.ids == [
        derived_uuid(b"span", TRACE, SPAN),
        derived_uuid(b"span", TRACE, PARENT),
    ]


def test_reasons_are_capped_and_summarised() -> None:
    spans = [make_span(trace_id=bytes(16)) for _ in range(MAX_REASONS + 3)]
    result = mapped(make_request(*spans, make_span()))
    assert result.rejected == MAX_REASONS + 3
    assert len(result.reasons) == MAX_REASONS
    assert len(result.columns) == 1
    assert result.error_message().endswith("; and 3 more")


def test_span_event_name_over_limit_rejects_the_span() -> None:
    result = mapped(make_request(make_span()), Limits(max_event_name_length=10))
    assert result.rejected == 1 and len(result.columns) == 0
    assert "event name must be at most 10 characters" in result.reasons[0]


def test_oversized_span_is_rejected() -> None:
    huge = make_span(name="huge", span_id=PARENT, attributes={"sql": "x" * 5000})
    result = mapped(make_request(make_span(), huge), Limits(max_event_bytes=4000))
    assert result.rejected == 1 and len(result.columns) == 1
    assert "('huge'): event is about" in result.reasons[0]
    assert "at most 4000 are allowed" in result.reasons[0]


def test_oversized_span_event_is_dropped_with_a_warning() -> None:
    span = make_span(events=[{"name": "big", "attributes": {"x": "y" * 5000}}])
    result = mapped(make_request(span), Limits(max_event_bytes=4000))
    assert result.rejected == 0 and result.columns.names == ["otel.span.unset"]
    assert "event 0: event is about" in result.reasons[0]


# --- limits: cut, never reject -------------------------------------------------------------


def test_oversized_label_sets_are_cut_and_recorded() -> None:
    resource = {"service.name": "checkout", **{f"r{i}": "v" for i in range(9)}}
    attrs = {f"a{i}": "v" for i in range(10)}
    span = make_span(attributes=attrs, events=[{"name": "e"}])
    result = mapped(make_request(span, resource=resource), Limits(max_labels_per_resource=8))
    assert result.rejected == 0 and result.reasons == []
    ev, span_ev = event(result, 0), event(result, 1)
    assert list(ev["resource"]) == [
        "prefect.resource.id",
        "prefect.resource.name",
        "service.name",
        "r0",
        "r1",
        "r2",
        "r3",
        "r4",
    ]
    assert len(ev["related"][0]) == 8
    assert list(ev["related"][0])[5:] == ["a0", "a1", "a2"]
    # 2 fixed + 10 attributes → 4 cut; 5 fixed + 10 attributes → 7 cut
    assert ev["payload"]["herald.truncated"] == {"resource": 4, "span": 7}
    assert span_ev["payload"]["herald.truncated"] == {"resource": 4}
    assert span_ev["resource"] == ev["resource"]


def test_attributes_never_override_herald_labels() -> None:
    attrs = {"prefect.resource.id": "evil", "otel.span.kind": "x", "ok": "1"}
    ev = event(mapped(make_request(make_span(attributes=attrs), resource=attrs)), 0)
    assert ev["resource"]["prefect.resource.id"] == "otel.service.unknown_service"
    assert ev["related"][0]["prefect.resource.id"] == "otel.span.eee19b7ec3c1b174"
    assert ev["related"][0]["otel.span.kind"] == "server"
    assert ev["related"][0]["ok"] == "1"
    assert ev["payload"]["herald.truncated"] == {"resource": 1, "span": 2}


def test_too_many_related_resources_are_cut_and_recorded() -> None:
    links = [{"trace_id": LINK_TRACE, "span_id": os.urandom(7) + b"\x01"} for _ in range(5)]
    span = make_span(parent_span_id=PARENT, links=links, events=[{"name": "e"}])
    result = mapped(make_request(span), Limits(max_related_resources=3))
    ev, span_ev = event(result, 0), event(result, 1)
    assert [r["prefect.resource.role"] for r in ev["related"]] == ["span", "trace", "parent-span"]
    assert ev["payload"]["herald.truncated"] == {"related": 6}
    assert len(span_ev["related"]) == 3 and "herald.truncated" not in span_ev["payload"]


# --- helpers -------------------------------------------------------------------------------


def test_derived_id_equals_the_domain_derived_uuid() -> None:
    for _ in range(500):
        parts = [os.urandom(n) for n in (3, 16, 8)]
        assert derived_id(*parts) == derived_uuid(*parts)
    assert derived_id(b"span", TRACE, SPAN) == derived_uuid(b"span", TRACE, SPAN)


@pytest.mark.parametrize(
    "us", [0, 1, 999_999, 1_000_000, 1_700_000_000_123_456, 253_402_300_799_999_999]
)
def test_iso_from_us_matches_datetime(us: int) -> None:
    expected = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
    assert iso_from_us(us) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso_from_us(us) == iso_from_us(us)  # second call comes from the cache


# --- time range, nesting and unexpected failures (docs/otlp.md "Timestamps") ----------------

EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
LATEST_NS = (RECEIVED + 86_400_000_000) * 1000 + 999  # received + a day, to the last ns


@pytest.mark.parametrize(
    ("field", "ns", "kept"),
    [
        ("start_time_unix_nano", EARLIEST_NS, True),
        ("start_time_unix_nano", EARLIEST_NS - 1, False),
        ("start_time_unix_nano", 1, False),
        ("end_time_unix_nano", LATEST_NS, True),
        ("end_time_unix_nano", LATEST_NS + 1, False),
        ("end_time_unix_nano", 2**64 - 1, False),
    ],
)
def test_span_times_must_lie_in_the_accepted_range(field: str, ns: int, kept: bool) -> None:
    other = "end_time_unix_nano" if field.startswith("start") else "start_time_unix_nano"
    result = mapped(make_request(make_span(**{field: ns, other: 0}), make_span(span_id=PARENT)))
    assert len(result.columns) == (2 if kept else 1)
    assert result.rejected == (0 if kept else 1)
    if not kept:
        assert result.reasons[0].startswith(
            f"span 0 of scope 0 of resource 0 ('GET /orders'): {field}={ns}: "
        )


def test_span_event_with_an_absurd_time_is_left_out_and_the_span_kept() -> None:
    span = make_span(events=[{"name": "late", "time": LATEST_NS + 1}, {"name": "ok", "time": END}])
    result = mapped(make_request(span))
    assert result.columns.names == ["otel.span.unset", "ok"]
    assert result.rejected == 0
    assert "event 0: time_unix_nano=" in result.reasons[0]
    assert result.reasons[0].endswith("the span was kept without it")


def test_an_unexpected_failure_mapping_one_span_rejects_only_that_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from collector.mapping import otlp_traces

    real = attributes_to_labels

    def flaky(kvs: Any) -> dict[str, str]:
        if any(kv.key == "boom" for kv in kvs):
            raise ZeroDivisionError("a bug")
        return real(kvs)

    monkeypatch.setattr(otlp_traces, "attributes_to_labels", flaky)
    req = make_request(make_span(attributes={"boom": 1}), make_span(span_id=PARENT))
    result = mapped(req)
    assert len(result.columns) == 1 and result.rejected == 1
    assert result.reasons == [f"span 0 of scope 0 of resource 0 ('GET /orders'): {UNEXPECTED}"]
    assert "ZeroDivision" not in result.error_message()


def test_any_value_nested_past_the_payload_limit_is_an_item_error() -> None:
    value = av({"a": [1]})
    assert any_value(value, MAX_PAYLOAD_DEPTH - 1) == {"a": [1]}
    with pytest.raises(InvalidEvent, match=f"nested deeper than {MAX_PAYLOAD_DEPTH} levels"):
        any_value(value, MAX_PAYLOAD_DEPTH)
