"""OTLP receivers against a real server: the official OTel SDK exporters (gRPC and HTTP/protobuf)
for the happy paths, raw grpc stubs and httpx for the protocol edges (otlp.md §1)."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collector.app import Herald
from collector.domain.columns import EventColumns
from collector.domain.events import RESOURCE_ID, ReceivedEvent, us_to_datetime
from collector.domain.ids import derived_uuid
from collector.testing import running_herald, test_config
from tests.conftest import INGEST_TOKEN, READ_TOKEN

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}

SERVICE: dict[str, str | int] = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "pod-7f9c",
    "process.pid": 4242,
}


# --- helpers -------------------------------------------------------------------------------


class RecordingSpanExporter(SpanExporter):
    """Wraps a real exporter and keeps each export's result (the SDK processors drop it)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # the OTel SDK leaves it unannotated

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_exporter(transport: str, herald: Herald, **kw: Any) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=f"http://{herald.grpc_address}", insecure=True, **kw)
    return HttpSpanExporter(endpoint=f"http://{herald.http_address}/v1/traces", **kw)


def log_exporter(transport: str, herald: Herald, **kw: Any) -> LogRecordExporter:
    if transport == "grpc":
        return GrpcLogExporter(endpoint=f"http://{herald.grpc_address}", insecure=True, **kw)
    return HttpLogExporter(endpoint=f"http://{herald.http_address}/v1/logs", **kw)


def gzip_option(transport: str) -> Any:
    return grpc.Compression.Gzip if transport == "grpc" else HttpCompression.Gzip


def span_event_id(trace_id: int, span_id: int, index: int | None = None) -> str:
    """The stored id of a span (or of its span event ``index``): the mapping's derived id."""
    t, s = trace_id.to_bytes(16, "big"), span_id.to_bytes(8, "big")
    if index is None:
        return derived_uuid(b"span", t, s)
    return derived_uuid(b"span-event", t, s, index.to_bytes(4, "big"))


def stored(herald: Herald) -> int:
    assert herald.store is not None
    return herald.store.count_events()


def get(herald: Herald, event_id: str) -> ReceivedEvent:
    assert herald.store is not None
    event = herald.store.get_event(event_id)
    assert event is not None, f"event {event_id} is not stored"
    return event


def events_named(herald: Herald, name: str) -> list[ReceivedEvent]:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        rows = cur.execute(
            "SELECT id::VARCHAR FROM events WHERE event = ? ORDER BY occurred", [name]
        ).fetchall()
    finally:
        cur.close()
    return [get(herald, row[0]) for row in rows]


def at_us(ns: int) -> datetime:
    """An OTLP nanosecond time as Herald stores it (truncated to microseconds)."""
    return us_to_datetime(ns // 1000)


def iso(ns: int) -> str:
    return at_us(ns).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def trace_request(*span_ids: bytes) -> ExportTraceServiceRequest:
    """A hand-built request: one resource, one scope, one span per id (an id may be invalid)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "raw-sender"))
    ss = rs.scope_spans.add()
    ss.scope.name = "raw"
    for i, span_id in enumerate(span_ids):
        span = ss.spans.add()
        span.trace_id = TRACE_ID
        span.span_id = span_id
        span.name = f"op-{i}"
        span.start_time_unix_nano = 1_764_000_000_000_000_000 + i
        span.end_time_unix_nano = 1_764_000_000_500_000_000 + i
    return request


def logs_request(*bodies: str) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "raw-sender"))
    sl = rl.scope_logs.add()
    for i, body in enumerate(bodies):
        record = sl.log_records.add()
        record.time_unix_nano = 1_764_000_000_000_000_000 + i
        record.severity_number = SEVERITY_NUMBER_INFO
        record.body.string_value = body
    return request


def metrics_request() -> ExportMetricsServiceRequest:
    """Two gauge points and one histogram point."""
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    gauge = metrics.add(name="queue.depth")
    gauge.gauge.data_points.add(as_int=3)
    gauge.gauge.data_points.add(as_int=4)
    metrics.add(name="latency").histogram.data_points.add(count=1, sum=2.5)
    return request


def grpc_export(herald: Herald, request: Any, *, token: str | None = None, **kw: Any) -> Any:
    """One raw gRPC Export of ``request`` to the matching OTLP service."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(herald.grpc_address, **kw) as channel:
        if isinstance(request, ExportTraceServiceRequest):
            stub: Any = trace_service_pb2_grpc.TraceServiceStub(channel)
        elif isinstance(request, ExportLogsServiceRequest):
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        else:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        return stub.Export(request, metadata=metadata, timeout=10)


def http_post(herald: Herald, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"http://{herald.http_address}{path}", content=body, headers=headers)


def rpc_status_of(reply: httpx.Response) -> status_pb2.Status:
    """The google.rpc.Status error body, decoded by the reply's Content-Type."""
    if reply.headers["content-type"].startswith("application/json"):
        return json_format.Parse(reply.content, status_pb2.Status())
    assert reply.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(reply.content)


# --- real SDK exporters --------------------------------------------------------------------


@pytest.fixture(params=["grpc", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tracing(herald: Herald, transport: str) -> Iterator[tuple[Any, RecordingSpanExporter]]:
    exporter = RecordingSpanExporter(span_exporter(transport, herald))
    provider = TracerProvider(resource=Resource.create(SERVICE))
    # SimpleSpanProcessor exports as each span ends, so nothing needs waiting for.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("checkout.orders", "1.2.3"), exporter
    provider.shutdown()


def test_sdk_spans_are_stored_field_by_field(
    herald: Herald, tracing: tuple[Any, RecordingSpanExporter]
) -> None:
    tracer, exporter = tracing
    with tracer.start_as_current_span(
        "POST /orders",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.response.status_code": 500},
    ) as order:
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as charge:
            charge.set_attribute("payment.amount", 12.5)
        try:
            raise ValueError("sku 17 is out of stock")
        except ValueError as exc:
            order.record_exception(exc)
            order.set_status(Status(StatusCode.ERROR, "out of stock"))
    retry = tracer.start_span("retry order", links=[Link(order.get_span_context())])
    retry.end()

    assert exporter.results == [SpanExportResult.SUCCESS] * 3
    assert stored(herald) == 4  # three spans and the exception span event
    ctx, charge_ctx, retry_ctx = (
        order.get_span_context(),
        charge.get_span_context(),
        retry.get_span_context(),
    )
    trace_hex, order_hex = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    scope = {
        "prefect.resource.id": "otel.scope.checkout.orders",
        "prefect.resource.role": "scope",
        "otel.scope.version": "1.2.3",
    }
    trace = {"prefect.resource.id": f"otel.trace.{trace_hex}", "prefect.resource.role": "trace"}

    # The failed request span.
    event = get(herald, span_event_id(ctx.trace_id, ctx.span_id))
    assert event.event == "otel.span.error"
    assert event.resource["prefect.resource.id"] == "otel.service.shop.checkout"
    assert event.resource["prefect.resource.name"] == "checkout"
    assert event.resource["service.namespace"] == "shop"
    assert event.resource["service.instance.id"] == "pod-7f9c"
    assert event.resource["process.pid"] == "4242"  # non-string attributes as JSON
    assert event.resource["telemetry.sdk.language"] == "python"
    assert event.related == [
        {
            "prefect.resource.id": f"otel.span.{order_hex}",
            "prefect.resource.role": "span",
            "prefect.resource.name": "POST /orders",
            "otel.span.kind": "server",
            "otel.trace_id": trace_hex,
            "http.request.method": "POST",
            "http.response.status_code": "500",
        },
        trace,
        scope,
    ]
    assert order.start_time is not None and order.end_time is not None
    assert event.occurred == at_us(order.end_time)
    assert event.payload == {
        "kind": "server",
        "status": {"code": "error", "message": "out of stock"},
        "start_time": iso(order.start_time),
        "end_time": iso(order.end_time),
        "duration_ms": (order.end_time - order.start_time) / 1e6,
        "trace_state": "",
        "flags": 0x100,  # as the Python SDK encodes it: "has is_remote" set, not remote
        "dropped_attributes_count": 0,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
    }

    # Its exception span event, from span.record_exception.
    exception = get(herald, span_event_id(ctx.trace_id, ctx.span_id, 0))
    assert exception.event == "exception"
    assert exception.resource == event.resource
    assert exception.related == [
        {
            "prefect.resource.id": f"otel.span.{order_hex}",
            "prefect.resource.role": "span",
            "prefect.resource.name": "POST /orders",
            "otel.span.kind": "server",
            "otel.trace_id": trace_hex,
        },
        trace,
        scope,
    ]
    assert exception.payload["exception.type"] == "ValueError"
    assert exception.payload["exception.message"] == "sku 17 is out of stock"
    assert "ValueError: sku 17 is out of stock" in exception.payload["exception.stacktrace"]
    assert exception.payload["span_name"] == "POST /orders"
    assert exception.occurred == at_us(order.events[0].timestamp)

    # The child span points at its parent.
    child = get(herald, span_event_id(charge_ctx.trace_id, charge_ctx.span_id))
    assert child.event == "otel.span.unset"
    assert child.related[0]["prefect.resource.name"] == "charge card"
    assert child.related[0]["otel.span.kind"] == "client"
    assert child.related[0]["payment.amount"] == "12.5"
    assert child.related[1:] == [
        trace,
        {"prefect.resource.id": f"otel.span.{order_hex}", "prefect.resource.role": "parent-span"},
        scope,
    ]
    assert child.payload["status"] == {"code": "unset", "message": ""}
    assert child.payload["kind"] == "client"

    # The span in another trace that links back to the request span.
    linked = get(herald, span_event_id(retry_ctx.trace_id, retry_ctx.span_id))
    assert linked.event == "otel.span.unset"
    assert retry_ctx.trace_id != ctx.trace_id
    assert linked.related[-1] == {
        "prefect.resource.id": f"otel.span.{order_hex}",
        "prefect.resource.role": "link",
        "otel.trace_id": trace_hex,
    }
    assert [r["prefect.resource.role"] for r in linked.related] == [
        "span",
        "trace",
        "scope",
        "link",
    ]


def test_sdk_logs_are_stored_field_by_field(herald: Herald, transport: str) -> None:
    exporter = RecordingLogExporter(log_exporter(transport, herald))
    provider = LoggerProvider(resource=Resource.create(SERVICE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("checkout.payments", "0.9")
    tracer = TracerProvider().get_tracer("checkout")  # only to have an active span context
    placed_at = time.time_ns()
    try:
        # The SDK in use has LogRecord.event_name (proto field 12), so it is set directly.
        logger.emit(
            timestamp=placed_at,
            event_name="app.order.placed",
            severity_number=SeverityNumber.INFO,
            body={"order": 8812, "items": ["sku-17", "sku-18"]},
            attributes={"customer": "17", "express": True},
        )
        with tracer.start_as_current_span("pay") as span:
            logger.emit(  # no timestamp: Herald falls back to the observed time
                severity_number=SeverityNumber.ERROR,
                severity_text="ERROR",
                body="payment declined",
                attributes={"order.id": 8812},
            )
    finally:
        provider.shutdown()
    assert exporter.results == [LogRecordExportResult.SUCCESS] * 2
    assert stored(herald) == 2
    scope = {
        "prefect.resource.id": "otel.scope.checkout.payments",
        "prefect.resource.role": "scope",
        "otel.scope.version": "0.9",
    }

    [placed] = events_named(herald, "app.order.placed")
    assert placed.resource["prefect.resource.id"] == "otel.service.shop.checkout"
    assert placed.resource["prefect.resource.name"] == "checkout"
    assert placed.resource["process.pid"] == "4242"
    assert placed.related == [scope]  # logged outside any span: no trace context
    assert placed.occurred == at_us(placed_at)
    assert placed.payload["body"] == {"order": 8812, "items": ["sku-17", "sku-18"]}
    assert placed.payload["attributes"] == {"customer": "17", "express": True}
    assert placed.payload["severity_number"] == 9
    assert placed.payload["observed_time"] is not None

    [declined] = events_named(herald, "otel.log.error")
    ctx = span.get_span_context()
    trace_hex, span_hex = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    assert declined.resource == placed.resource
    assert declined.related == [
        {"prefect.resource.id": f"otel.trace.{trace_hex}", "prefect.resource.role": "trace"},
        {
            "prefect.resource.id": f"otel.span.{span_hex}",
            "prefect.resource.role": "span",
            "otel.trace_id": trace_hex,
        },
        scope,
    ]
    assert declined.payload["body"] == "payment declined"
    assert declined.payload["attributes"] == {"order.id": 8812}
    assert declined.payload["severity_text"] == "ERROR"
    assert declined.payload["severity_number"] == 17
    assert declined.payload["flags"] == int(ctx.trace_flags)  # sampled (+ W3C "random")
    observed = datetime.fromisoformat(declined.payload["observed_time"].replace("Z", "+00:00"))
    assert declined.occurred == observed


def test_sdk_gzip_exports_are_accepted(herald: Herald, transport: str) -> None:
    exporter = RecordingSpanExporter(
        span_exporter(transport, herald, compression=gzip_option(transport))
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "zipped"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("z").start_as_current_span("compressed") as span:
        span.set_attribute("filler", "x" * 10_000)  # worth compressing
    logs = RecordingLogExporter(log_exporter(transport, herald, compression=gzip_option(transport)))
    log_provider = LoggerProvider(resource=Resource.create({"service.name": "zipped"}))
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    log_provider.get_logger("z").emit(body="compressed log", severity_number=SeverityNumber.WARN)
    provider.shutdown()
    log_provider.shutdown()
    assert exporter.results == [SpanExportResult.SUCCESS]
    assert logs.results == [LogRecordExportResult.SUCCESS]
    ctx = span.get_span_context()
    span_labels = get(herald, span_event_id(ctx.trace_id, ctx.span_id)).related[0]
    assert span_labels["filler"] == "x" * 10_000
    assert events_named(herald, "otel.log.warn")[0].payload["body"] == "compressed log"


def test_standard_env_vars_alone_configure_the_exporters(
    secured_herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user sets in a deployment: endpoints, the bearer token header, the service."""
    herald = secured_herald
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{INGEST_TOKEN}")
    # gRPC: the generic endpoint is the server address.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{herald.grpc_address}")
    # HTTP logs: a per-signal endpoint is used verbatim, so it includes /v1/logs.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"http://{herald.http_address}/v1/logs")
    spans = RecordingSpanExporter(GrpcSpanExporter())
    logs = RecordingLogExporter(HttpLogExporter())
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log_provider = LoggerProvider(resource=Resource.create())
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    with provider.get_tracer("billing").start_as_current_span("invoice") as span:
        log_provider.get_logger("billing").emit(
            body="invoice sent", severity_number=SeverityNumber.INFO
        )
    provider.shutdown()
    log_provider.shutdown()
    assert spans.results == [SpanExportResult.SUCCESS]
    assert logs.results == [LogRecordExportResult.SUCCESS]
    ctx = span.get_span_context()
    event = get(herald, span_event_id(ctx.trace_id, ctx.span_id))
    assert event.resource["prefect.resource.id"] == "otel.service.billing"
    assert event.resource["deployment.environment"] == "staging"
    [log] = events_named(herald, "otel.log.info")
    assert log.related[0]["prefect.resource.id"] == f"otel.trace.{ctx.trace_id:032x}"


def test_generic_http_endpoint_gets_the_signal_path_appended(
    herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{herald.http_address}")
    exporter = RecordingSpanExporter(HttpSpanExporter())
    provider = TracerProvider(resource=Resource.create({"service.name": "generic"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("g").start_span("to /v1/traces").end()
    provider.shutdown()
    assert exporter.results == [SpanExportResult.SUCCESS]
    assert stored(herald) == 1


def test_per_signal_endpoint_without_the_path_fails(
    herald: Herald, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The documented pitfall: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used verbatim."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://{herald.http_address}")
    exporter = RecordingSpanExporter(HttpSpanExporter())
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.CRITICAL):  # the exporter logs the 404; expected here
        provider.get_tracer("g").start_span("to /").end()
    provider.shutdown()
    assert exporter.results == [SpanExportResult.FAILURE]
    assert stored(herald) == 0


# --- encodings and protocol edges ----------------------------------------------------------


def test_otlp_json_with_hex_ids(herald: Herald) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "web"}},
                        {"key": "process.pid", "value": {"intValue": "77"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "browser", "version": "2"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",  # hex, any case
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "GET /cart",
                                "kind": 3,
                                "startTimeUnixNano": "1764000000000000000",
                                "endTimeUnixNano": 1764000000250000000,
                                "status": {"code": 1},
                                "unknownField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    reply = http_post(herald, "/v1/traces", orjson.dumps(body), JSON)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {}  # full success: partial_success unset
    event = get(
        herald,
        derived_uuid(
            b"span",
            bytes.fromhex("5b8efff798038103d269b633813fc60c"),
            bytes.fromhex("eee19b7ec3c1b174"),
        ),
    )
    assert event.event == "otel.span.ok"
    assert event.resource["process.pid"] == "77"
    assert event.related[0]["otel.span.kind"] == "client"
    assert event.related[0]["otel.trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert event.related[2] == {
        "prefect.resource.id": "otel.span.eee19b7ec3c1b173",
        "prefect.resource.role": "parent-span",
    }
    assert event.payload["duration_ms"] == 250.0
    assert event.occurred == at_us(1_764_000_000_250_000_000)

    logs = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "eventName": "browser.page_view",
                                "timeUnixNano": "1764000000000000000",
                                "body": {"stringValue": "/cart"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                            },
                        ]
                    }
                ]
            }
        ]
    }
    reply = http_post(
        herald, "/v1/logs", gzip.compress(orjson.dumps(logs)), {**JSON, "Content-Encoding": "gzip"}
    )
    assert reply.status_code == 200 and reply.json() == {}
    [view] = events_named(herald, "browser.page_view")
    assert view.resource["prefect.resource.id"] == "otel.service.unknown_service"
    assert view.related == [
        {
            "prefect.resource.id": "otel.trace.5b8efff798038103d269b633813fc60c",
            "prefect.resource.role": "trace",
        }
    ]


def test_protobuf_reply_is_protobuf(herald: Herald) -> None:
    request = trace_request(bytes.fromhex("00000000000000a1"))
    reply = http_post(herald, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(reply.content).HasField("partial_success")
    assert stored(herald) == 1


@pytest.mark.parametrize(
    ("path", "request_factory", "response_type"),
    [
        ("/v1/traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
        ("/v1/logs", ExportLogsServiceRequest, ExportLogsServiceResponse),
        ("/v1/metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    ],
    ids=["traces", "logs", "metrics"],
)
def test_empty_request_is_a_plain_success(
    herald: Herald, path: str, request_factory: Callable[[], Any], response_type: Any
) -> None:
    response = grpc_export(herald, request_factory())
    assert not response.HasField("partial_success")
    reply = http_post(herald, path, b"", PROTOBUF)
    assert reply.status_code == 200 and reply.content == b""
    reply = http_post(herald, path, b"{}", JSON)
    assert reply.status_code == 200 and reply.json() == {}
    assert stored(herald) == 0


def test_same_export_twice_is_stored_once(herald: Herald) -> None:
    spans = trace_request(bytes.fromhex("00000000000000b1"), bytes.fromhex("00000000000000b2"))
    logs = logs_request("first", "second")
    for _ in range(2):
        grpc_export(herald, spans)
        grpc_export(herald, logs)
        assert http_post(herald, "/v1/traces", spans.SerializeToString(), PROTOBUF).is_success
        assert http_post(herald, "/v1/logs", logs.SerializeToString(), PROTOBUF).is_success
    assert stored(herald) == 4


def test_one_invalid_span_is_a_partial_success_and_the_rest_is_stored(herald: Herald) -> None:
    request = trace_request(
        bytes.fromhex("00000000000000c1"), bytes(8), bytes.fromhex("00000000000000c3")
    )
    response = grpc_export(herald, request)
    assert response.partial_success.rejected_spans == 1
    assert "span 1 of scope 0 of resource 0 ('op-1')" in response.partial_success.error_message
    assert "span_id must be 8 bytes, not all zero" in response.partial_success.error_message
    assert stored(herald) == 2

    reply = http_post(herald, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert reply.status_code == 200
    partial = ExportTraceServiceResponse.FromString(reply.content).partial_success
    assert partial.rejected_spans == 1 and "span_id" in partial.error_message
    assert stored(herald) == 2  # the valid two again: deduplicated


def test_metrics_are_answered_with_every_point_rejected(herald: Herald) -> None:
    response = grpc_export(herald, metrics_request())
    assert response.partial_success.rejected_data_points == 3
    assert "not metrics" in response.partial_success.error_message
    reply = http_post(herald, "/v1/metrics", metrics_request().SerializeToString(), PROTOBUF)
    assert reply.status_code == 200
    assert ExportMetricsServiceResponse.FromString(reply.content).partial_success == (
        response.partial_success
    )
    body = json_format.MessageToJson(metrics_request())
    reply = http_post(herald, "/v1/metrics", body.encode(), JSON)
    assert reply.json()["partialSuccess"]["rejectedDataPoints"] == "3"  # int64: a JSON string
    assert stored(herald) == 0


def test_malformed_body_is_400_or_invalid_argument(herald: Herald) -> None:
    for path in ("/v1/traces", "/v1/logs", "/v1/metrics"):
        reply = http_post(herald, path, b"\xff\xff\xff", PROTOBUF)
        assert reply.status_code == 400
        status = rpc_status_of(reply)
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "not a valid Export" in status.message

        reply = http_post(herald, path, b'{"resourceSpans": [', JSON)
        assert reply.status_code == 400
        # Errors come in the request's encoding.
        assert reply.headers["content-type"] == "application/json"
        assert "not valid JSON" in rpc_status_of(reply).message

    bad_hex = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}
    reply = http_post(herald, "/v1/traces", orjson.dumps(bad_hex), JSON)
    assert reply.status_code == 400 and "is not a hex string" in reply.json()["message"]

    not_gzip = {**PROTOBUF, "Content-Encoding": "gzip"}
    reply = http_post(herald, "/v1/traces", b"\x1f\x8b not gzip", not_gzip)
    assert reply.status_code == 400

    with grpc.insecure_channel(herald.grpc_address) as channel:
        for service in ("trace.v1.TraceService", "logs.v1.LogsService"):
            export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/opentelemetry.proto.collector.{service}/Export"
            )
            with pytest.raises(grpc.RpcError) as info:
                export(b"\xff\xff\xff", timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(herald) == 0


def test_unknown_content_type_is_415(herald: Herald) -> None:
    request = trace_request(bytes.fromhex("00000000000000d1")).SerializeToString()
    for content_type in ("text/plain", "application/protobuf", None):
        headers = {"Content-Type": content_type} if content_type else {}
        reply = http_post(herald, "/v1/traces", request, headers)
        assert reply.status_code == 415
        assert "application/x-protobuf" in rpc_status_of(reply).message
    assert stored(herald) == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(herald: Herald, method: str) -> None:
    for path in ("/v1/traces", "/v1/logs", "/v1/metrics"):
        reply = httpx.request(method, f"http://{herald.http_address}{path}")
        assert reply.status_code == 405
        assert reply.headers["Allow"] == "POST"
        assert method in rpc_status_of(reply).message


def test_bad_token_is_unauthenticated_and_nothing_is_stored(secured_herald: Herald) -> None:
    herald = secured_herald
    # Real exporters with a wrong token: the export fails (and is not retried).
    spans = RecordingSpanExporter(
        span_exporter("grpc", herald, headers={"authorization": "Bearer wrong-token-value"})
    )
    logs = RecordingLogExporter(
        log_exporter("http", herald, headers={"authorization": "Bearer nope"})
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log_provider = LoggerProvider()
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    provider.get_tracer("t").start_span("refused").end()
    log_provider.get_logger("t").emit(body="refused")
    provider.shutdown()
    log_provider.shutdown()
    assert spans.results == [SpanExportResult.FAILURE]
    assert logs.results == [LogRecordExportResult.FAILURE]

    request = trace_request(bytes.fromhex("00000000000000e1"))
    for token in (None, "wrong-token-value"):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(herald, request, token=token)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        headers = {**PROTOBUF, **({"Authorization": f"Bearer {token}"} if token else {})}
        reply = http_post(herald, "/v1/traces", request.SerializeToString(), headers)
        assert reply.status_code == 401
        status = rpc_status_of(reply)  # OTLP wants google.rpc.Status, not Herald's JSON
        assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert "bearer token" in status.message
    # A JSON request hears about it in JSON.
    reply = http_post(herald, "/v1/logs", b"{}", JSON)
    assert reply.status_code == 401 and reply.json()["code"] == 16
    # A token without the ingest scope.
    with pytest.raises(grpc.RpcError) as info:
        grpc_export(herald, request, token=READ_TOKEN)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = http_post(
        herald,
        "/v1/traces",
        request.SerializeToString(),
        {**PROTOBUF, "Authorization": f"Bearer {READ_TOKEN}"},
    )
    assert reply.status_code == 403
    assert stored(herald) == 0

    grpc_export(herald, request, token=INGEST_TOKEN)
    assert stored(herald) == 1


def test_oversize_is_413_or_resource_exhausted(db_path: Path) -> None:
    limit = 4096
    with running_herald(test_config(db_path, server={"max_receive_bytes": limit})) as herald:
        big = trace_request(bytes.fromhex("00000000000000f1"))
        big.resource_spans[0].scope_spans[0].spans[0].attributes.append(kv("blob", "x" * 2 * limit))
        data = big.SerializeToString()
        assert len(data) > limit and len(gzip.compress(data)) < limit

        with pytest.raises(grpc.RpcError) as info:
            grpc_export(herald, big)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The limit holds after decompression too.
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(herald, big, compression=grpc.Compression.Gzip)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        reply = http_post(herald, "/v1/traces", data, PROTOBUF)
        assert reply.status_code == 413
        assert rpc_status_of(reply).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        reply = http_post(
            herald, "/v1/traces", gzip.compress(data), {**PROTOBUF, "Content-Encoding": "gzip"}
        )
        assert reply.status_code == 413
        assert stored(herald) == 0

        small = trace_request(bytes.fromhex("00000000000000f2"))
        grpc_export(herald, small)
        assert http_post(herald, "/v1/traces", small.SerializeToString(), PROTOBUF).is_success
        assert stored(herald) == 1


def _one_event() -> EventColumns:
    cols = EventColumns()
    # A current time: the server's retention (which starts with it) would delete a 1970 one.
    now = time.time_ns() // 1000
    cols.append("0193a000-0000-7000-8000-000000000001", now, "x", {RESOURCE_ID: "r"}, [], "{}")
    return cols


def test_busy_is_unavailable_with_retry_info_or_503_with_retry_after(db_path: Path) -> None:
    config = test_config(db_path, storage={"queue_max_events": 1, "batch_max_events": 1})
    with running_herald(config) as herald:
        assert herald.writer is not None and herald.store is not None
        spans = trace_request(bytes.fromhex("0000000000000101"))
        logs = logs_request("busy")
        with herald.store._write_lock:  # the writer blocks in its commit; the queue is full
            pending = herald.writer.submit_nowait(_one_event())
            for request in (spans, logs):
                with pytest.raises(grpc.RpcError) as info:
                    grpc_export(herald, request)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                trailers = {m.key: m.value for m in info.value.trailing_metadata()}
                details = trailers["grpc-status-details-bin"]
                retry = error_details_pb2.RetryInfo()
                assert status_pb2.Status.FromString(details).details[0].Unpack(retry)
                assert retry.retry_delay.seconds >= 1

            for path, request in (("/v1/traces", spans), ("/v1/logs", logs)):
                reply = http_post(herald, path, request.SerializeToString(), PROTOBUF)
                assert reply.status_code == 503
                assert int(reply.headers["Retry-After"]) >= 1
                status = rpc_status_of(reply)
                assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
                assert status.details[0].Unpack(error_details_pb2.RetryInfo())
            # An empty request has nothing to queue, so it still succeeds.
            assert not grpc_export(herald, ExportTraceServiceRequest()).HasField("partial_success")
        assert pending.result(5) == 1
        # Nothing of the refused requests was stored; a retry now goes through.
        assert stored(herald) == 1
        grpc_export(herald, spans)
        assert stored(herald) == 2
