"""OTLP receivers over gRPC (``TraceService``, ``LogsService``, ``MetricsService`` ``Export``),
and ``OtlpIngest``, the transport-neutral OTLP ingest step the HTTP routes reuse.

This module owns: auth → map (``collector/mapping/otlp_*``) → commit → ``Export*Response``
with ``partial_success`` only when something was rejected or warned about. It does not map,
store or choose status codes itself: mapping is ``collector/mapping``, commits are the
``BatchWriter``'s, and errors go through ``status.abort_grpc`` (Busy → UNAVAILABLE + RetryInfo).
gzip and the receive limit (RESOURCE_EXHAUSTED) are grpcio's, configured in ``app.py``.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.clock import now_us
from collector.config import Scope
from collector.domain.events import Limits
from collector.errors import InvalidInput
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events
from collector.server.auth import Authenticator
from collector.server.native_grpc import authorization
from collector.server.status import abort_grpc
from collector.store.writer import BatchWriter

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

    Raises ``Busy`` when the writer's queue is full and ``StoreError`` when the commit fails;
    the caller maps those through ``status``. A response is returned only after the mapped
    events are committed ("acknowledged means durable", SPEC §3).
    """

    def __init__(self, writer: BatchWriter, limits: Limits) -> None:
        self._writer = writer
        self._limits = limits

    async def export_traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        # Mapping runs on the event loop: it is pure CPU under the GIL, so a thread would not
        # add throughput, only hand-offs.
        result = traces_to_events(request, now_us(), self._limits)
        await self._writer.submit(result.columns)
        response = ExportTraceServiceResponse()
        # OTLP: partial_success stays unset on full success (and a client must not retry one).
        if result.rejected or result.problems:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error_message()
        return response

    async def export_logs(self, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
        result = logs_to_events(request, now_us(), self._limits)
        await self._writer.submit(result.columns)
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
            response.partial_success.rejected_data_points = n
            response.partial_success.error_message = METRICS_NOT_STORED.format(n=n)
        return response


class _OtlpServicer:
    """One OTLP service's ``Export``: auth → decode → ingest, every failure as a status.

    The request arrives as bytes and is decoded here, not by grpcio: grpcio answers a body it
    cannot deserialize with UNKNOWN, while OTLP wants INVALID_ARGUMENT (not retried), and
    checking the token first means an unauthenticated caller costs no parse.
    """

    service: str  # full gRPC service name
    request_type: type[Message]
    response_type: type[Message]

    def __init__(self, ingest: OtlpIngest, auth: Authenticator) -> None:
        self._ingest = ingest
        self._auth = auth

    async def _ingest_request(self, request: Any) -> Message:
        raise NotImplementedError

    async def Export(  # the gRPC method name
        self, body: bytes, context: grpc.aio.ServicerContext
    ) -> Message:
        try:
            self._auth.check(authorization(context), Scope.INGEST)
            request = self.request_type()
            try:
                request.ParseFromString(body)
            except DecodeError as exc:
                raise InvalidInput(
                    f"request is not a valid {self.request_type.__name__}: {exc}"
                ) from None
            return await self._ingest_request(request)
        except Exception as exc:  # every failure gets a status; unexpected ones are logged
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register ``Export`` under the OTLP service name, taking the raw request bytes."""
        handlers = {
            "Export": grpc.unary_unary_rpc_method_handler(
                self.Export,
                request_deserializer=None,  # bytes: decoded in Export (see the class doc)
                response_serializer=self.response_type.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self.service, handlers),)
        )


class TraceServicer(_OtlpServicer):
    """``opentelemetry.proto.collector.trace.v1.TraceService``."""

    service = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
    request_type = ExportTraceServiceRequest
    response_type = ExportTraceServiceResponse

    async def _ingest_request(self, request: Any) -> Message:
        return await self._ingest.export_traces(request)


class LogsServicer(_OtlpServicer):
    """``opentelemetry.proto.collector.logs.v1.LogsService``."""

    service = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
    request_type = ExportLogsServiceRequest
    response_type = ExportLogsServiceResponse

    async def _ingest_request(self, request: Any) -> Message:
        return await self._ingest.export_logs(request)


class MetricsServicer(_OtlpServicer):
    """``opentelemetry.proto.collector.metrics.v1.MetricsService`` (answers, stores nothing)."""

    service = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name
    request_type = ExportMetricsServiceRequest
    response_type = ExportMetricsServiceResponse

    async def _ingest_request(self, request: Any) -> Message:
        return await self._ingest.export_metrics(request)
