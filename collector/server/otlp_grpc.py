"""OTLP receivers over gRPC (``TraceService``, ``LogsService``, ``MetricsService`` ``Export``).

This module owns: auth → decode → ``OtlpIngest`` (``collector/pipeline/otlp_ingest.py``: map,
commit, build the ``Export*Response``) → answer. It does not map, store or choose status codes
itself: errors go through ``status.abort_grpc`` (Busy → UNAVAILABLE + RetryInfo).
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

from collector.config import Scope
from collector.errors import InvalidInput
from collector.pipeline.otlp_ingest import OtlpIngest
from collector.server.auth import Authenticator
from collector.server.native_grpc import authorization
from collector.server.status import abort_grpc

INVALID_REQUEST = "request is not a valid {type}: {error}"


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

    async def _ingest_body(self, body: bytes) -> Message:
        """Decode and ingest ``body`` (the traces and logs services hand the bytes on: they may
        be decoded in a mapping worker, ``OtlpIngest.export_body``)."""
        request = self.request_type()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidInput(
                INVALID_REQUEST.format(type=self.request_type.__name__, error=exc)
            ) from None
        return await self._ingest_request(request)

    async def _ingest_request(self, request: Any) -> Message:
        raise NotImplementedError

    async def Export(  # the gRPC method name
        self, body: bytes, context: grpc.aio.ServicerContext[bytes, Message]
    ) -> Message:
        try:
            self._auth.check(authorization(context), Scope.INGEST)
            return await self._ingest_body(body)
        except Exception as exc:  # every failure gets a status; unexpected ones are logged
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register ``Export`` under the OTLP service name, taking the raw request bytes."""
        handlers: dict[str, grpc.RpcMethodHandler[bytes, Message]] = {
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

    async def _ingest_body(self, body: bytes) -> Message:
        return await self._ingest.export_body("traces", body, invalid=INVALID_REQUEST)


class LogsServicer(_OtlpServicer):
    """``opentelemetry.proto.collector.logs.v1.LogsService``."""

    service = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
    request_type = ExportLogsServiceRequest
    response_type = ExportLogsServiceResponse

    async def _ingest_body(self, body: bytes) -> Message:
        return await self._ingest.export_body("logs", body, invalid=INVALID_REQUEST)


class MetricsServicer(_OtlpServicer):
    """``opentelemetry.proto.collector.metrics.v1.MetricsService`` (answers, stores nothing)."""

    service = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name
    request_type = ExportMetricsServiceRequest
    response_type = ExportMetricsServiceResponse

    async def _ingest_request(self, request: Any) -> Message:
        return await self._ingest.export_metrics(request)
