"""``OtlpIngest``: the OTLP ingest step, the same for every transport (gRPC and HTTP receivers
in ``collector/server/``): an OTLP export request → mapped events (``collector/mapping/otlp_*``)
→ committed through an ``EventSink`` → the OTLP export response, with ``partial_success`` only
when something was rejected or warned about. Decoding the request and choosing status codes
stay with the receivers.
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.domain.self_metrics import NoMetrics, SelfMetrics, reason_of
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events
from collector.pipeline.sink import EventSink

METRICS_NOT_STORED = (
    "Herald stores traces and logs, not metrics: {n} data point(s) were not stored "
    "(disable the metrics exporter, or send metrics to a metrics backend)"
)

# Metric.data oneof cases; each holds ``data_points``.
_METRIC_KINDS = frozenset(("gauge", "sum", "histogram", "exponential_histogram", "summary"))


def count_data_points(request: ExportMetricsServiceRequest) -> int:
    """Data points in a metrics request (what OTLP's ``rejected_data_points`` counts)."""
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind in _METRIC_KINDS:
                    n += len(getattr(metric, kind).data_points)
    return n


class OtlpIngest:
    """OTLP export requests → committed events → OTLP export responses (any transport).

    Raises ``Busy`` when the sink's queue is full and ``StoreError`` when the commit fails;
    the caller maps those through ``status``. A response is returned only after the mapped
    events are committed ("acknowledged means durable", SPEC §3).
    """

    def __init__(
        self, sink: EventSink, limits: Limits, *, metrics: SelfMetrics | None = None
    ) -> None:
        self._sink = sink
        self._limits = limits
        self._metrics = metrics or NoMetrics()

    async def _store(self, signal: str, columns: EventColumns, rejected: int) -> None:
        """Commit one request's mapped items, counted once per request."""
        metrics = self._metrics
        metrics.ingested(signal, len(columns) + rejected, rejected)
        try:
            stored = await self._sink.submit(columns)
        except Exception as exc:
            metrics.refused(signal, reason_of(exc), len(columns))
            raise
        metrics.stored(signal, stored)

    async def export_traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        # Mapping runs on the event loop: it is pure CPU under the GIL, so a thread would not
        # add throughput, only hand-offs.
        result = traces_to_events(request, now_us(), self._limits)
        await self._store("spans", result.columns, result.rejected)
        response = ExportTraceServiceResponse()
        # OTLP: partial_success stays unset on full success (and a client must not retry one).
        if result.rejected or result.problems:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error_message()
        return response

    async def export_logs(self, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
        result = logs_to_events(request, now_us(), self._limits)
        await self._store("logs", result.columns, result.rejected)
        response = ExportLogsServiceResponse()
        if result.rejected or result.problems:
            response.partial_success.rejected_log_records = result.rejected
            response.partial_success.error_message = result.error_message()
        return response

    async def export_metrics(
        self, request: ExportMetricsServiceRequest
    ) -> ExportMetricsServiceResponse:
        """Metrics are answered, not stored: every data point is reported as rejected, so an
        SDK with metrics on does not retry or spam errors, and its logs say why."""
        response = ExportMetricsServiceResponse()
        if request.resource_metrics:
            n = count_data_points(request)
            self._metrics.ingested("metrics", n, 0)
            self._metrics.refused("metrics", "not_stored", n)
            response.partial_success.rejected_data_points = n
            response.partial_success.error_message = METRICS_NOT_STORED.format(n=n)
        return response
