"""OTLP log records → events (SPEC §4), on real opentelemetry-proto messages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector.domain.events import Limits
from collector.domain.ids import derived_uuid
from collector.mapping.otlp_common import MAX_REASONS, MappingResult, identity_digest
from collector.mapping.otlp_logs import logs_to_events, severity_event_name

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
TIME = 1_700_000_000_123_456_789  # ns
OBSERVED = TIME + 2_000_000
RECEIVED = 1_800_000_000_000_000  # us
LIMITS = Limits()


def av(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (lists → arrays, dicts → kvlists)."""
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


def make_record(**fields: Any) -> LogRecord:
    attrs = fields.pop("attributes", {})
    body = fields.pop("body", None)
    base: dict[str, Any] = {
        "time_unix_nano": TIME,
        "observed_time_unix_nano": OBSERVED,
        "severity_number": 9,
        "severity_text": "INFO",
    }
    base.update(fields)
    record = LogRecord(**base)
    record.attributes.extend(kvs(attrs))
    if body is not None:
        record.body.CopyFrom(av(body))
    return record


def make_request(
    *records: LogRecord,
    resource: dict[str, Any] | None = None,
    scope: tuple[str, str] | None = ("app.logger", "2.0"),
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    attrs = {"service.name": "checkout"} if resource is None else resource
    rl.resource.attributes.extend(kvs(attrs))
    sl = rl.scope_logs.add()
    if scope:
        sl.scope.name, sl.scope.version = scope
    sl.log_records.extend(records)
    return req


def mapped(req: ExportLogsServiceRequest, limits: Limits = LIMITS) -> MappingResult:
    return logs_to_events(req, RECEIVED, limits)


def event(result: MappingResult, i: int = 0) -> dict[str, Any]:
    c = result.columns
    return {
        "id": c.ids[i],
        "occurred_us": c.occurred_us[i],
        "event": c.names[i],
        "resource": c.resource(i),
        "related": c.related_resources(i),
        "payload": orjson.loads(c.payloads[i]),
    }


def test_log_record_maps_every_field() -> None:
    record = make_record(
        trace_id=TRACE,
        span_id=SPAN,
        flags=1,
        dropped_attributes_count=2,
        severity_number=17,
        severity_text="ERROR",
        body="payment failed",
        attributes={"order.id": 8812, "retry": True, "tags": ["a"], "ctx": {"k": "v"}},
    )
    req = make_request(record, resource={"service.name": "checkout", "service.namespace": "shop"})
    result = mapped(req)
    assert result.rejected == 0 and len(result.columns) == 1
    ev = event(result)
    assert ev["event"] == "otel.log.error"
    assert ev["resource"] == {
        "prefect.resource.id": "otel.service.shop.checkout",
        "prefect.resource.name": "checkout",
        "service.name": "checkout",
        "service.namespace": "shop",
    }
    assert ev["related"] == [
        {
            "prefect.resource.id": "otel.trace.5b8efff798038103d269b633813fc60c",
            "prefect.resource.role": "trace",
        },
        {
            "prefect.resource.id": "otel.span.eee19b7ec3c1b174",
            "prefect.resource.role": "span",
            "otel.trace_id": "5b8efff798038103d269b633813fc60c",
        },
        {
            "prefect.resource.id": "otel.scope.app.logger",
            "prefect.resource.role": "scope",
            "otel.scope.version": "2.0",
        },
    ]
    assert ev["payload"] == {
        "body": "payment failed",
        "attributes": {"order.id": 8812, "retry": True, "tags": ["a"], "ctx": {"k": "v"}},
        "severity_text": "ERROR",
        "severity_number": 17,
        "observed_time": "2023-11-14T22:13:20.125456Z",
        "flags": 1,
        "dropped_attributes_count": 2,
    }
    assert ev["occurred_us"] == TIME // 1000
    res = req.resource_logs[0]
    assert ev["id"] == derived_uuid(
        b"log",
        identity_digest(res.resource),
        identity_digest(res.scope_logs[0].scope),
        record.SerializeToString(deterministic=True),
    )


def test_event_name_field_wins_then_attribute_then_severity() -> None:
    both = make_record(event_name="browser.page_view", attributes={"event.name": "old.name"})
    attr = make_record(attributes={"event.name": "old.name"})
    non_string = make_record(attributes={"event.name": 5})
    empty = make_record(attributes={"event.name": ""})
    result = mapped(make_request(both, attr, non_string, empty))
    assert result.columns.names == [
        "browser.page_view",
        "old.name",
        "otel.log.info",
        "otel.log.info",
    ]
    # the attribute stays in the payload as sent
    assert event(result, 1)["payload"]["attributes"] == {"event.name": "old.name"}


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "unspecified"),
        (1, "trace"),
        (4, "trace"),
        (5, "debug"),
        (8, "debug"),
        (9, "info"),
        (12, "info"),
        (13, "warn"),
        (16, "warn"),
        (17, "error"),
        (20, "error"),
        (21, "fatal"),
        (24, "fatal"),
        (25, "unspecified"),
        (-1, "unspecified"),
    ],
)
def test_severity_event_names(number: int, name: str) -> None:
    assert severity_event_name(number) == f"otel.log.{name}"
    result = mapped(make_request(make_record(severity_number=number)))
    assert result.columns.names == [f"otel.log.{name}"]
    assert event(result)["payload"]["severity_number"] == number


@pytest.mark.parametrize(
    ("trace_id", "span_id", "roles"),
    [
        (b"", b"", ["scope"]),
        (bytes(16), bytes(8), ["scope"]),
        (TRACE[:15], SPAN + b"\x00", ["scope"]),  # wrong lengths: not associated, not rejected
        (TRACE, b"", ["trace", "scope"]),
        (b"", SPAN, ["span", "scope"]),
    ],
)
def test_trace_context_only_when_ids_are_valid(
    trace_id: bytes, span_id: bytes, roles: list[str]
) -> None:
    result = mapped(make_request(make_record(trace_id=trace_id, span_id=span_id)))
    assert result.rejected == 0
    related = event(result)["related"]
    assert [r["prefect.resource.role"] for r in related] == roles
    if roles[0] == "span":
        assert "otel.trace_id" not in related[0]


def test_no_scope_name_means_no_scope_related() -> None:
    result = mapped(make_request(make_record(), scope=None))
    assert event(result)["related"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, None),
        ("text", "text"),
        (42, 42),
        (2.5, 2.5),
        (True, True),
        (b"\x01\x02", "AQI="),
        (["a", 1, [2]], ["a", 1, [2]]),
        ({"user": {"id": 7, "roles": ["admin"]}}, {"user": {"id": 7, "roles": ["admin"]}}),
    ],
)
def test_body_is_typed_json(body: Any, expected: Any) -> None:
    assert event(mapped(make_request(make_record(body=body))))["payload"]["body"] == expected


def test_occurred_falls_back_to_observed_then_received() -> None:
    ev = event(mapped(make_request(make_record(time_unix_nano=0))))
    assert ev["occurred_us"] == OBSERVED // 1000
    ev = event(mapped(make_request(make_record(time_unix_nano=0, observed_time_unix_nano=0))))
    assert ev["occurred_us"] == RECEIVED
    assert ev["payload"]["observed_time"] is None


def test_same_record_resent_gets_the_same_id() -> None:
    first = mapped(make_request(make_record(body="x")))
    again = mapped(make_request(make_record(body="x"), make_record(body="y")))
    assert again.columns.ids[0] == first.columns.ids[0]
    assert again.columns.ids[1] != first.columns.ids[0]
    # the same record from another service or scope is another event
    other_service = mapped(make_request(make_record(body="x"), resource={"service.name": "b"}))
    other_scope = mapped(make_request(make_record(body="x"), scope=("other", "1")))
    ids = {first.columns.ids[0], other_service.columns.ids[0], other_scope.columns.ids[0]}
    assert len(ids) == 3


def test_event_name_over_limit_is_rejected_and_the_rest_mapped() -> None:
    records = [make_record(event_name="x" * 30), make_record(body="fine")]
    result = mapped(make_request(*records), Limits(max_event_name_length=20))
    assert result.rejected == 1
    assert result.reasons == [
        "log record 0 of scope 0 of resource 0: event name must be at most 20 characters"
    ]
    assert result.columns.names == ["otel.log.info"]


def test_oversized_record_is_rejected() -> None:
    records = [make_record(body="x" * 5000), make_record(body="fine")]
    result = mapped(make_request(*records), Limits(max_event_bytes=4000))
    assert result.rejected == 1 and len(result.columns) == 1
    assert result.reasons[0].startswith("log record 0 of scope 0 of resource 0: event is about")


def test_reasons_are_capped() -> None:
    records = [make_record(event_name="x" * 30) for _ in range(MAX_REASONS + 2)]
    result = mapped(make_request(*records), Limits(max_event_name_length=20))
    assert result.rejected == MAX_REASONS + 2 and len(result.reasons) == MAX_REASONS
    assert result.error_message().endswith("; and 2 more")


def test_resource_labels_and_related_are_cut_and_recorded() -> None:
    resource = {"service.name": "s", **{f"r{i}": "v" for i in range(5)}}
    record = make_record(trace_id=TRACE, span_id=SPAN)
    limits = Limits(max_labels_per_resource=4, max_related_resources=1)
    result = mapped(make_request(record, resource=resource), limits)
    ev = event(result)
    assert result.rejected == 0
    assert len(ev["resource"]) == 4
    assert [r["prefect.resource.role"] for r in ev["related"]] == ["trace"]
    assert ev["payload"]["herald.truncated"] == {"resource": 4, "related": 2}


def test_many_resources_and_scopes() -> None:
    req = ExportLogsServiceRequest()
    for service in ("a", "b"):
        rl = req.resource_logs.add()
        rl.resource.attributes.extend(kvs({"service.name": service}))
        for scope in ("s1", "s2"):
            sl = rl.scope_logs.add()
            sl.scope.name = scope
            sl.log_records.append(make_record())
    result = mapped(req)
    assert [event(result, i)["resource"]["prefect.resource.id"] for i in range(4)] == [
        "otel.service.a",
        "otel.service.a",
        "otel.service.b",
        "otel.service.b",
    ]
    assert len(set(result.columns.ids)) == 4


# --- time range (docs/otlp.md "Timestamps") --------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"time_unix_nano": 946_684_800 * 10**9}, True),  # 2000-01-01T00:00:00Z exactly
        ({"time_unix_nano": 946_684_800 * 10**9 - 1}, False),
        ({"time_unix_nano": 2**64 - 1}, False),
        ({"time_unix_nano": 0, "observed_time_unix_nano": 10**9}, False),  # 1970
        ({"observed_time_unix_nano": (RECEIVED + 86_400_000_000) * 1000 + 999}, True),
        ({"observed_time_unix_nano": (RECEIVED + 86_400_000_000) * 1000 + 1000}, False),
        ({"time_unix_nano": 0, "observed_time_unix_nano": 0}, True),  # unknown: received
    ],
)
def test_record_times_must_lie_in_the_accepted_range(fields: dict[str, int], kept: bool) -> None:
    result = mapped(make_request(make_record(**fields), make_record()))
    assert len(result.columns) == (2 if kept else 1)
    assert result.rejected == (0 if kept else 1)
    if not kept:
        assert result.reasons[0].startswith("log record 0 of scope 0 of resource 0: ")
        assert "_unix_nano=" in result.reasons[0]
