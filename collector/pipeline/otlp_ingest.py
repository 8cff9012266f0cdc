"""``OtlpIngest``: the OTLP ingest step, the same for every transport (gRPC and HTTP receivers
in ``collector/server/``): an OTLP export request → mapped events (``collector/mapping/otlp_*``)
→ committed through an ``EventSink`` → the OTLP export response, with ``partial_success`` only
when something was rejected or warned about. Choosing status codes stays with the receivers.

Trace and log bodies come in as bytes (``export_body``): with ``ingest.mapping_workers`` > 0
they are decoded and mapped in worker processes (``otlp_workers.MappingPool``), which hand
back the store's Arrow batch and the per-item outcome; with 0 they are decoded and mapped
here, on the event loop. Either way the answer (``partial_success`` included) is the same.
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
from collector.errors import InvalidEvent, InvalidInput
from collector.mapping.otlp_decode import INVALID_PROTOBUF, Signal, decode_export
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events
from collector.pipeline.otlp_workers import MappedRequest, MappingPool
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
        self,
        sink: EventSink,
        limits: Limits,
        *,
        metrics: SelfMetrics | None = None,
        pool: MappingPool | None = None,
    ) -> None:
        self._sink = sink
        self._limits = limits
        self._metrics = metrics or NoMetrics()
        self._pool = pool

    async def export_body(
        self, signal: Signal, body: bytes, *, json: bool = False, invalid: str = INVALID_PROTOBUF
    ) -> ExportTraceServiceResponse | ExportLogsServiceResponse:
        """Decode, map and commit a trace or logs export body (protobuf, or OTLP/JSON when
        ``json``); ``invalid`` words the error for a protobuf body that does not decode.

        Raises ``InvalidInput`` for an undecodable body, ``Busy`` when the mapping workers or
        the sink are full, ``StoreError`` when the commit fails."""
        if self._pool is None:
            request = decode_export(signal, body, json=json, invalid=invalid)
            if isinstance(request, ExportTraceServiceRequest):
                return await self.export_traces(request)
            return await self.export_logs(request)
        mapped = await self._pool.map(
            signal, body, now_us(), self._limits, json=json, invalid=invalid
        )
        if mapped.undecodable:
            raise InvalidInput(mapped.undecodable)
        if signal == "traces":
            await self._store_mapped("spans", mapped)
            traces = ExportTraceServiceResponse()
            if mapped.rejected or mapped.problems:
                traces.partial_success.rejected_spans = mapped.rejected
                traces.partial_success.error_message = mapped.error_message
            return traces
        await self._store_mapped("logs", mapped)
        logs = ExportLogsServiceResponse()
        if mapped.rejected or mapped.problems:
            logs.partial_success.rejected_log_records = mapped.rejected
            logs.partial_success.error_message = mapped.error_message
        return logs

    async def _store_mapped(self, signal: str, mapped: MappedRequest) -> None:
        """``_store`` for a request mapped in a worker: counted the same way."""
        metrics = self._metrics
        metrics.ingested(signal, mapped.rows + mapped.rejected, mapped.rejected)
        if not mapped.rows:
            metrics.stored(signal, 0)
            return
        try:
            if mapped.unstorable:  # what the writer would have refused at commit
                raise InvalidEvent(mapped.unstorable)
            stored = await self._sink.submit_table(mapped.table())
        except Exception as exc:
            metrics.refused(signal, reason_of(exc), mapped.rows)
            raise
        metrics.stored(signal, stored)

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
