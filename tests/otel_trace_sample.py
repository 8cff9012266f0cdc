"""A small, nested trace with logs, exported by the real OpenTelemetry SDK (OTLP/gRPC) to a
Herald server: what the trace tests (CLI, reader interface, HTTP page, browser) look at.

Two services take part (``shop-api`` and ``payments``, whose span is a child of a shop-api
span through the OTel context, as in a real call across processes), spans have fixed start and
end times (so durations are known), one span fails with an exception and a custom span event,
and two log records are written inside spans of the trace. A second, unrelated trace is sent
too, so a query that finds "everything" is caught.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

MS = 1_000_000  # nanoseconds
HOSTILE = "<script>alert('x')</script>\x1b[2J"


@dataclass
class SampleTrace:
    """What was sent: the trace id, each span's id (hex) by name, the unrelated trace's id."""

    trace_id: str
    spans: dict[str, str] = field(default_factory=dict)
    other_trace_id: str = ""
    # events stored for the trace: 5 spans + 2 span events + 2 logs
    event_count: int = 9


def export_sample_trace(grpc_address: str) -> SampleTrace:
    """Send the sample trace and its logs to ``grpc_address`` (host:port, insecure) and return
    what was sent. Every export is synchronous (Simple*Processor), so the events are stored
    when this returns."""
    endpoint = f"http://{grpc_address}"
    shop = TracerProvider(resource=Resource.create({"service.name": "shop-api"}))
    shop.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    payments = TracerProvider(resource=Resource.create({"service.name": "payments"}))
    payments.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    logs = LoggerProvider(resource=Resource.create({"service.name": "shop-api"}))
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
    )
    logger = logs.get_logger("shop.checkout")
    tracer = shop.get_tracer("shop.checkout", "1.0")
    pay_tracer = payments.get_tracer("payments.api")
    t0 = time.time_ns() - 60_000 * MS  # a minute ago: inside every default time range
    try:
        root = tracer.start_span("POST /checkout", start_time=t0, kind=SpanKind.SERVER)
        ctx = root.get_span_context()
        sample = SampleTrace(trace_id=f"{ctx.trace_id:032x}")
        sample.spans["POST /checkout"] = f"{ctx.span_id:016x}"
        with trace.use_span(root, end_on_exit=False):
            logger.emit(
                timestamp=t0 + 1 * MS,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body="checkout started",
            )
            reserve = tracer.start_span("reserve stock", start_time=t0 + 2 * MS)
            sample.spans["reserve stock"] = f"{reserve.get_span_context().span_id:016x}"
            with trace.use_span(reserve, end_on_exit=False):
                select = tracer.start_span(
                    "SELECT stock",
                    start_time=t0 + 3 * MS,
                    kind=SpanKind.CLIENT,
                    # Stored text that must stay text on every page and terminal.
                    attributes={"db.statement": HOSTILE},
                )
                sample.spans["SELECT stock"] = f"{select.get_span_context().span_id:016x}"
                select.end(end_time=t0 + 15 * MS)
            reserve.end(end_time=t0 + 20 * MS)
            charge = tracer.start_span("charge card", start_time=t0 + 21 * MS, kind=SpanKind.CLIENT)
            sample.spans["charge card"] = f"{charge.get_span_context().span_id:016x}"
            with trace.use_span(charge, end_on_exit=False, record_exception=False):
                authorize = pay_tracer.start_span(
                    "authorize", start_time=t0 + 25 * MS, kind=SpanKind.SERVER
                )
                sample.spans["authorize"] = f"{authorize.get_span_context().span_id:016x}"
                authorize.set_status(Status(StatusCode.OK))
                authorize.end(end_time=t0 + 70 * MS)
                charge.add_event("retry", {"attempt": 2}, timestamp=t0 + 72 * MS)
                charge.record_exception(
                    ValueError("card declined"), timestamp=t0 + 75 * MS, escaped=True
                )
                logger.emit(
                    timestamp=t0 + 76 * MS,
                    severity_number=SeverityNumber.ERROR,
                    severity_text="ERROR",
                    body="payment declined",
                    attributes={"order.id": 8812},
                )
                charge.set_status(Status(StatusCode.ERROR, "card declined"))
            charge.end(end_time=t0 + 80 * MS)
        root.set_status(Status(StatusCode.OK))
        root.end(end_time=t0 + 100 * MS)

        other = tracer.start_span("GET /health", start_time=t0 + 200 * MS)
        sample.other_trace_id = f"{other.get_span_context().trace_id:032x}"
        other.end(end_time=t0 + 201 * MS)
    finally:
        shop.shutdown()
        payments.shutdown()
        logs.shutdown()
    return sample
