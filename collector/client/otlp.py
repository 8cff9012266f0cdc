"""``OtlpClient``: OTLP/gRPC exports to a Herald server's OTLP receiver (``TraceService`` and
``LogsService`` on the gRPC port), with the retries Herald's answers ask for.

What the OpenTelemetry exporter plugin's remote mode sends through (``collector/otel/``). An
export returns only once the server committed it (Herald answers after the commit). ``Busy``
(``UNAVAILABLE`` with ``RetryInfo``: the ingest queue is full) and an unreachable server (not up
yet, restarting) are retried after the delay the server named, else with a doubling backoff,
until the client's ``timeout`` is spent; then, and on any other error, the Herald error is
raised. Retrying is safe: Herald derives OTLP event ids from the spans and records, so an
export committed just before its answer was lost is stored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector import errors as e
from collector.client.connection import Connection, error_from_rpc

Request = TypeVar("Request")
Response = TypeVar("Response")

# The first wait when the server names none (an unreachable server); doubled up to the cap.
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0


def retry_delay(exc: grpc.RpcError) -> float | None:
    """The ``RetryInfo`` delay in a failed call's ``grpc-status-details-bin`` (None: none)."""
    for item in exc.trailing_metadata() or ():
        if item.key != "grpc-status-details-bin" or not isinstance(item.value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(item.value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class OtlpClient(Connection):
    """OTLP/gRPC to a Herald server: ``address`` / ``token`` as ``Connection`` takes them
    (``HERALD_ADDRESS``, ``HERALD_TOKEN``); ``timeout`` bounds one export, retries included."""

    def __init__(
        self, address: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(address, token, timeout)
        self._traces = trace_service_pb2_grpc.TraceServiceStub(self._channel)
        self._logs = logs_service_pb2_grpc.LogsServiceStub(self._channel)
        self.retries = 0  # calls answered busy or unreachable and tried again (diagnostics)

    def export_traces(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        """Send spans; the answer (with ``partial_success`` if some were rejected) comes once
        the rest is committed."""
        response: ExportTraceServiceResponse = self._export(self._traces.Export, request)
        return response

    def export_logs(self, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
        """Send log records; answered once committed, as ``export_traces``."""
        response: ExportLogsServiceResponse = self._export(self._logs.Export, request)
        return response

    def _export(self, method: Callable[..., Response], request: Request) -> Response:
        deadline = time.monotonic() + self.timeout
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            left = deadline - time.monotonic()
            try:
                return method(request, timeout=max(left, 0.001), metadata=self._metadata())
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, self.address)
                if not isinstance(error, e.Busy | e.ServerUnreachable):
                    raise error from None
                named = retry_delay(exc)
                wait = named if named is not None else backoff
                self.retries += 1
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                if time.monotonic() + wait >= deadline:
                    raise error from None
                time.sleep(wait)
