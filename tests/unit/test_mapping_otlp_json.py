"""OTLP/JSON bodies (otlp.md §1.3) → protobuf requests: hex ids, leniency, clear errors."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from collector.domain.events import Limits
from collector.errors import InvalidInput
from collector.mapping.otlp_json import parse_logs_json, parse_metrics_json, parse_traces_json
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events

TRACE_HEX = "5B8EFFF798038103D269B633813FC60C"
SPAN_HEX = "EEE19B7EC3C1B174"
PARENT_HEX = "EEE19B7EC3C1B173"

# opentelemetry-proto/examples/trace.json, with an unknown field and a link added
TRACE_EXAMPLE: dict[str, Any] = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "spans": [
                        {
                            "traceId": TRACE_HEX,
                            "spanId": SPAN_HEX,
                            "parentSpanId": PARENT_HEX,
                            "name": "I'm a server span",
                            "startTimeUnixNano": 1544712660000000000,
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [
                                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
                            ],
                            "links": [{"traceId": TRACE_HEX.lower(), "spanId": "00f067aa0ba902b7"}],
                            "someFutureField": {"x": 1},
                        }
                    ],
                }
            ],
        }
    ]
}

# opentelemetry-proto/examples/logs.json, shortened, plus an event name
LOGS_EXAMPLE: dict[str, Any] = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeLogs": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "logRecords": [
                        {
                            "timeUnixNano": "1544712660300000000",
                            "observedTimeUnixNano": 1544712660300000000,
                            "severityNumber": "SEVERITY_NUMBER_INFO",
                            "severityText": "Information",
                            "traceId": TRACE_HEX,
                            "spanId": SPAN_HEX,
                            "eventName": "browser.page_view",
                            "body": {"stringValue": "Example log record"},
                            "attributes": [
                                {"key": "int.attribute", "value": {"intValue": "10"}},
                                {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                                {"key": "bytes.attribute", "value": {"bytesValue": "AQI="}},
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}


RECEIVED = 1_800_000_000_000_000  # us, 2027: the examples' times lie before it


def body(data: Any) -> bytes:
    return orjson.dumps(data)


def to_otlp_json(message: Any) -> dict[str, Any]:
    """What a spec-conformant OTLP/JSON exporter sends: proto3 JSON, but ids in hex."""
    data = MessageToDict(message)

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
    return data


def test_trace_example_ids_are_hex_not_base64() -> None:
    req = parse_traces_json(body(TRACE_EXAMPLE))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX)
    assert span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == bytes.fromhex(PARENT_HEX)
    assert span.links[0].trace_id == bytes.fromhex(TRACE_HEX)
    assert span.links[0].span_id == bytes.fromhex("00f067aa0ba902b7")
    # int64 as a number and as a string, enum as an integer
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert span.kind == 2


def test_trace_example_maps_to_events() -> None:
    result = traces_to_events(parse_traces_json(body(TRACE_EXAMPLE)), RECEIVED, Limits())
    assert result.rejected == 0
    assert result.columns.names == ["otel.span.unset"]
    assert result.columns.resource(0)["prefect.resource.id"] == "otel.service.my.service"
    assert [r["prefect.resource.id"] for r in result.columns.related_resources(0)] == [
        "otel.span.eee19b7ec3c1b174",
        "otel.trace.5b8efff798038103d269b633813fc60c",
        "otel.span.eee19b7ec3c1b173",
        "otel.scope.my.library",
        "otel.span.00f067aa0ba902b7",
    ]


def test_traces_round_trip_through_otlp_json() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    for i in range(20):
        span = ss.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            parent_span_id=os.urandom(8) if i % 2 else b"",
            name=f"span {i}",
            kind=i % 6,
            start_time_unix_nano=2**63 + i,  # fixed64 beyond int64: JSON string
            end_time_unix_nano=2**63 + i + 1,
            flags=0x301,
        )
        span.attributes.add(key="bin", value=AnyValue(bytes_value=os.urandom(5)))
        span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8))
        span.events.add(name="e", time_unix_nano=5)
        span.status.code = Status.STATUS_CODE_ERROR
    assert parse_traces_json(body(to_otlp_json(req))) == req


def test_logs_example() -> None:
    req = parse_logs_json(body(LOGS_EXAMPLE))
    record = req.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == bytes.fromhex(TRACE_HEX)
    assert record.span_id == bytes.fromhex(SPAN_HEX)
    assert record.severity_number == 9  # enum given by name
    assert record.time_unix_nano == 1544712660300000000
    result = logs_to_events(req, RECEIVED, Limits())
    assert result.columns.names == ["browser.page_view"]
    payload = orjson.loads(result.columns.payloads[0])
    assert payload["body"] == "Example log record"
    assert payload["attributes"] == {
        "int.attribute": 10,
        "double.attribute": 637.704,
        "bytes.attribute": "AQI=",  # AnyValue bytes stay base64 in OTLP/JSON: only ids are hex
    }


def test_logs_round_trip_through_otlp_json() -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(5):
        rec = sl.log_records.add(
            time_unix_nano=i, severity_number=i * 4, trace_id=os.urandom(16), span_id=os.urandom(8)
        )
        rec.body.kvlist_value.values.append(KeyValue(key="k", value=AnyValue(int_value=-i)))
    assert parse_logs_json(body(to_otlp_json(req))) == req


def test_snake_case_keys_and_enum_names_are_accepted() -> None:
    data = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_HEX,
                                "span_id": SPAN_HEX,
                                "parent_span_id": PARENT_HEX,
                                "kind": "SPAN_KIND_CLIENT",
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = parse_traces_json(body(data)).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == TRACE_HEX.lower()
    assert span.parent_span_id.hex() == PARENT_HEX.lower()
    assert span.kind == 3 and span.status.code == 2


def test_unknown_fields_are_ignored_everywhere() -> None:
    data = {
        "resourceSpans": [
            {
                "scopeSpans": [{"spans": [{"traceId": TRACE_HEX, "newThing": [1, 2]}], "x": 1}],
                "resource": {"attributes": [], "entityRefs2": {}},
            }
        ],
        "extension": "ignored",
    }
    assert len(parse_traces_json(body(data)).resource_spans[0].scope_spans[0].spans) == 1


def test_unknown_enum_integers_are_kept() -> None:
    data = {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 9}]}]}]}
    assert parse_traces_json(body(data)).resource_spans[0].scope_spans[0].spans[0].kind == 9


def test_empty_and_missing_ids_stay_empty() -> None:
    data = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "", "name": "x"}]}]}]}
    span = parse_traces_json(body(data)).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == b"" and span.span_id == b""


def test_wrong_length_ids_are_left_to_the_mapper() -> None:
    span = {"traceId": "abcd", "spanId": SPAN_HEX}
    data = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    req = parse_traces_json(body(data))
    result = traces_to_events(req, RECEIVED, Limits())
    assert result.rejected == 1 and "trace_id must be 16 bytes" in result.reasons[0]


def test_metrics_exemplar_ids_are_hex() -> None:
    data = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "requests",
                                "sum": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "asInt": "3",
                                            "exemplars": [
                                                {"traceId": TRACE_HEX, "spanId": SPAN_HEX}
                                            ],
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    req = parse_metrics_json(body(data))
    point = req.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert point.as_int == 3
    assert point.exemplars[0].trace_id == bytes.fromhex(TRACE_HEX)
    assert point.exemplars[0].span_id == bytes.fromhex(SPAN_HEX)


def test_empty_object_is_an_empty_request() -> None:
    assert parse_traces_json(b"{}") == ExportTraceServiceRequest()
    assert parse_logs_json(b"{}") == ExportLogsServiceRequest()
    assert len(parse_metrics_json(b"{}").resource_metrics) == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "body is not valid JSON"),
        (b"{not json", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"resourceSpans": 3}', "resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "name field"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: 'zz' is not a hex string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": 12}]}]}]}',
            "spans[0].spanId: must be a hex string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"spanId": "0g"}]}]}]}]}',
            "spans[0].links[0].spanId",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "startTimeUnixNano",
        ),
    ],
)
def test_undecodable_traces_raise_invalid_input(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match="OTLP/JSON") as info:
        parse_traces_json(raw)
    assert message in str(info.value)


def test_undecodable_logs_and_metrics_raise_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"logRecords\[0\].traceId"):
        parse_logs_json(b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}')
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_metrics_json(b"nope")


def test_unknown_enum_names_are_ignored_like_unknown_fields() -> None:
    # json_format's ignore_unknown_fields also skips enum names it does not know
    data = {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SERVER"}]}]}]}
    assert parse_traces_json(body(data)).resource_spans[0].scope_spans[0].spans[0].kind == 0


@pytest.mark.parametrize("depth", [120, 340])
def test_deeply_nested_values_raise_invalid_input_not_crash(depth: int) -> None:
    value = '{"stringValue":"leaf"}'
    for _ in range(depth):
        value = '{"arrayValue":{"values":[' + value + "]}}"
    raw = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + "}]}]}]}"
    with pytest.raises(InvalidInput) as info:
        parse_logs_json(raw.encode())
    assert len(str(info.value)) <= 600  # a long chain of "Failed to parse …" is shortened
