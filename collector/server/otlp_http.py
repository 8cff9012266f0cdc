"""OTLP/HTTP receivers: ``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics`` (otlp.md §1.2–1.8).

This module owns the HTTP side of OTLP: dispatch on ``Content-Type`` (``application/x-protobuf``
or ``application/json``, else 415), decoding the body (gzip and the size limit are
``read_body``'s), answering in the request's encoding, 405 + ``Allow`` for other methods, and
error bodies as ``google.rpc.Status`` (JSON for JSON requests, protobuf otherwise). Mapping and
committing are ``OtlpIngest``'s; statuses come from ``status`` (Busy → 503 + Retry-After).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from collector.config import Scope
from collector.errors import InvalidInput
from collector.mapping.otlp_json import parse_metrics_json
from collector.pipeline.otlp_ingest import OtlpIngest
from collector.server.http_server import Route, read_body
from collector.server.status import classify, retry_after_header, rpc_status

M = TypeVar("M", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _Signal:
    """One OTLP signal's HTTP endpoint: whom to hand its body to (``export(body, as_json)``
    decodes it, or has it decoded in a mapping worker)."""

    path: str
    export: Callable[[bytes, bool], Awaitable[Message]]


def otlp_routes(ingest: OtlpIngest) -> list[Route]:
    """The OTLP/HTTP routes; each path answers POST, and 405 to any other method."""

    async def traces(body: bytes, as_json: bool) -> Message:
        return await ingest.export_body("traces", body, json=as_json)

    async def logs(body: bytes, as_json: bool) -> Message:
        return await ingest.export_body("logs", body, json=as_json)

    async def metrics(body: bytes, as_json: bool) -> Message:
        message = (
            parse_metrics_json(body)
            if as_json
            else _parse_protobuf(body, ExportMetricsServiceRequest)
        )
        return await ingest.export_metrics(message)

    signals = [
        _Signal("/v1/traces", traces),
        _Signal("/v1/logs", logs),
        _Signal("/v1/metrics", metrics),
    ]
    routes: list[Route] = []
    for signal in signals:
        # POST first: aiohttp tries a path's routes in order and "*" matches every method.
        post = _export_handler(signal)
        routes.append(Route("POST", signal.path, post, Scope.INGEST, error_reply))
        routes.append(Route("*", signal.path, _method_not_allowed, Scope.INGEST, error_reply))
    return routes


def _export_handler(signal: _Signal) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def export(request: web.Request) -> web.StreamResponse:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            # Checked before reading the body: there is nothing we could do with it.
            return _status_reply(
                request,
                415,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unsupported Content-Type {content_type!r}: OTLP/HTTP takes {PROTOBUF} or {JSON}",
            )
        try:
            body = await read_body(request)
            response = await signal.export(body, content_type == JSON)
        except Exception as exc:  # every failure gets a Status body; unexpected ones are logged
            return error_reply(request, exc)
        return _encode(response, content_type == JSON)

    export.__name__ = f"otlp_export_{signal.path.rsplit('/', 1)[-1]}"
    return export


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    return _status_reply(
        request,
        405,
        grpc.StatusCode.UNIMPLEMENTED,
        f"{request.method} is not allowed on {request.path}: OTLP/HTTP exports are POST",
        headers={"Allow": "POST"},
    )


def _parse_protobuf(body: bytes, request_type: type[M]) -> M:
    message = request_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidInput(
            f"body is not a valid {request_type.__name__} protobuf message: {exc}"
        ) from None
    return message


def _wants_json(request: web.Request) -> bool:
    return request.content_type == JSON


def _encode(message: Message, as_json: bool, status: int = 200, **kw: Any) -> web.Response:
    """``message`` as the body, in the request's encoding (OTLP: same Content-Type as sent)."""
    if as_json:
        # proto3 JSON of the response: lowerCamelCase keys, int64 as strings (OTLP/JSON).
        body = orjson.dumps(json_format.MessageToDict(message))
        return web.Response(body=body, status=status, content_type=JSON, **kw)
    body = message.SerializeToString()
    return web.Response(body=body, status=status, content_type=PROTOBUF, **kw)


def error_reply(request: web.Request, exc: BaseException) -> web.Response:
    """The OTLP error answer for ``exc``: mapped status, ``google.rpc.Status`` body (with
    ``RetryInfo`` and a ``Retry-After`` header when retryable)."""
    code, http_status, message = classify(exc)  # logs an unexpected error, once
    # rpc_status would classify (and log) again; an internal error has no retry hint anyway.
    status = (
        status_pb2.Status(code=code.value[0], message=message)
        if code == grpc.StatusCode.INTERNAL
        else rpc_status(exc)
    )
    return _encode(status, _wants_json(request), http_status, headers=retry_after_header(exc))


def _status_reply(
    request: web.Request,
    http_status: int,
    code: grpc.StatusCode,
    message: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A ``google.rpc.Status`` answer for HTTP-only conditions (405, 415) that no Herald error
    class stands for."""
    status = status_pb2.Status(code=code.value[0], message=message)
    return _encode(status, _wants_json(request), http_status, headers=headers)
