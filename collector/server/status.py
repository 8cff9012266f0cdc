"""THE mapping from Herald errors to gRPC status codes and HTTP statuses (and nothing else).

Busy maps to UNAVAILABLE + ``RetryInfo`` / 503 + ``Retry-After`` (OTLP senders retry those);
bad input maps to INVALID_ARGUMENT / 400 (permanent, not retried). Unexpected exceptions are
INTERNAL / 500 and are logged once with their traceback.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from collector import errors as e

log = logging.getLogger(__name__)

_TABLE: list[tuple[type[BaseException], grpc.StatusCode, int]] = [
    # Prefect's automations API answers a body that does not validate with 422 (FastAPI's
    # Unprocessable Entity), and its client reads that; other bad input stays 400.
    (e.InvalidAutomation, grpc.StatusCode.INVALID_ARGUMENT, 422),
    (e.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (e.EventTooLarge, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (e.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (e.NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (e.Conflict, grpc.StatusCode.ALREADY_EXISTS, 409),
    (e.Busy, grpc.StatusCode.UNAVAILABLE, 503),
    (e.StoreError, grpc.StatusCode.UNAVAILABLE, 503),
]


def classify(exc: BaseException) -> tuple[grpc.StatusCode, int, str]:
    """(gRPC code, HTTP status, message) for ``exc``."""
    for kind, code, http in _TABLE:
        if isinstance(exc, kind):
            return code, http, str(exc)
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, 500, "internal error (see the server log)"


def retry_after(exc: BaseException) -> float | None:
    """Seconds the client should wait before retrying, for retryable errors."""
    if isinstance(exc, e.Busy):
        return exc.retry_after
    if isinstance(exc, e.StoreError):
        return 1.0
    return None


def _status(code: grpc.StatusCode, message: str, delay: float | None) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if delay is not None:
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(delay), nanos=int((delay % 1) * 1e9))
        )
        status.details.add().Pack(info)
    return status


def rpc_status(exc: BaseException) -> status_pb2.Status:
    """``google.rpc.Status`` for ``exc``, with ``RetryInfo`` when it is retryable."""
    code, _, message = classify(exc)
    return _status(code, message, retry_after(exc))


async def abort_grpc(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """End an RPC with the status for ``exc`` (RetryInfo in grpc-status-details-bin)."""
    code, _, message = classify(exc)
    status = _status(code, message, retry_after(exc))
    await context.abort(
        code, message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
    )


def retry_after_header(exc: BaseException) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) for retryable errors, else nothing."""
    delay = retry_after(exc)
    return {"Retry-After": str(max(1, math.ceil(delay)))} if delay is not None else {}
