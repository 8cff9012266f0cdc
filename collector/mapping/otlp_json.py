"""OTLP/JSON request bodies (otlp.md §1.3) → the same protobuf requests as OTLP/protobuf.

OTLP's JSON is proto3 JSON with one trap: trace and span ids (``traceId``, ``spanId``,
``parentSpanId``, on spans, links, log records and metric exemplars) are hex strings, where
``google.protobuf.json_format`` expects base64 and would silently decode a hex id into 24
wrong bytes. So the body is decoded with orjson, those ids are rewritten hex → base64 in
place, and only then is ``json_format.ParseDict`` run, with ``ignore_unknown_fields=True``
(receivers MUST ignore unknown fields). ``ParseDict`` already accepts the rest of OTLP's
leniency: enums as integers or names, 64-bit integers as strings or numbers, lowerCamelCase
or snake_case keys.

Anything undecodable raises ``InvalidInput`` naming where in the body it went wrong. Ids of
the wrong length are *not* errors here: the mappers reject those items one by one.
"""

from __future__ import annotations

from base64 import b64encode
from binascii import Error as BinasciiError
from binascii import a2b_hex
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.errors import InvalidInput

M = TypeVar("M", bound=Message)

# Each id field under both spellings ParseDict accepts (OTLP says lowerCamelCase; the
# Collector accepts snake_case too, and so do we).
_TRACE_ID = ("traceId", "trace_id")
_SPAN_ID = ("spanId", "span_id")
_PARENT_SPAN_ID = ("parentSpanId", "parent_span_id")

# Metric data kinds that hold data points, which may hold exemplars with ids.
_METRIC_DATA = (
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "exponential_histogram",
    "summary",
)


def parse_traces_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON ``/v1/traces`` body → ``ExportTraceServiceRequest``."""
    data = _load(body, "traces")
    for ri, rs in _children(data, "resourceSpans", "resource_spans"):
        for si, ss in _children(rs, "scopeSpans", "scope_spans"):
            for pi, span in _children(ss, "spans"):
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                _hex_ids(span, where, _TRACE_ID, _SPAN_ID, _PARENT_SPAN_ID)
                for li, link in _children(span, "links"):
                    _hex_ids(link, f"{where}.links[{li}]", _TRACE_ID, _SPAN_ID)
    return _parse(data, ExportTraceServiceRequest(), "traces")


def parse_logs_json(body: bytes) -> ExportLogsServiceRequest:
    """An OTLP/JSON ``/v1/logs`` body → ``ExportLogsServiceRequest``."""
    data = _load(body, "logs")
    for ri, rl in _children(data, "resourceLogs", "resource_logs"):
        for si, sl in _children(rl, "scopeLogs", "scope_logs"):
            for li, record in _children(sl, "logRecords", "log_records"):
                where = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]"
                _hex_ids(record, where, _TRACE_ID, _SPAN_ID)
    return _parse(data, ExportLogsServiceRequest(), "logs")


def parse_metrics_json(body: bytes) -> ExportMetricsServiceRequest:
    """An OTLP/JSON ``/v1/metrics`` body → ``ExportMetricsServiceRequest`` (exemplar ids hex)."""
    data = _load(body, "metrics")
    for ri, rm in _children(data, "resourceMetrics", "resource_metrics"):
        for si, sm in _children(rm, "scopeMetrics", "scope_metrics"):
            for mi, metric in _children(sm, "metrics"):
                if not isinstance(metric, dict):
                    continue
                for kind in _METRIC_DATA:
                    points = metric.get(kind)
                    if not isinstance(points, dict):
                        continue
                    for di, point in _children(points, "dataPoints", "data_points"):
                        for ei, exemplar in _children(point, "exemplars"):
                            where = (
                                f"resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]."
                                f"{kind}.dataPoints[{di}].exemplars[{ei}]"
                            )
                            _hex_ids(exemplar, where, _TRACE_ID, _SPAN_ID)
    return _parse(data, ExportMetricsServiceRequest(), "metrics")


def _load(body: bytes, signal: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"OTLP/JSON {signal} request: body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"OTLP/JSON {signal} request: body must be a JSON object")
    return data


def _children(parent: Any, *keys: str) -> list[tuple[int, Any]]:
    """The indexed items of the list under the first of ``keys`` present in ``parent``.

    Anything of the wrong shape yields nothing here; ``ParseDict`` reports it afterwards with
    its own message, so the shape rules live in one place.
    """
    if not isinstance(parent, dict):
        return []
    for key in keys:
        items = parent.get(key)
        if items is not None:
            return list(enumerate(items)) if isinstance(items, list) else []
    return []


def _hex_ids(obj: Any, where: str, *fields: tuple[str, str]) -> None:
    """Rewrite the hex id ``fields`` of ``obj`` to base64, the form ``ParseDict`` reads."""
    if not isinstance(obj, dict):
        return
    for spellings in fields:
        for key in spellings:
            value = obj.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise InvalidInput(f"OTLP/JSON request: {where}.{key}: must be a hex string")
            try:
                raw = a2b_hex(value)
            except (BinasciiError, ValueError):
                raise InvalidInput(
                    f"OTLP/JSON request: {where}.{key}: {value[:64]!r} is not a hex string "
                    "(OTLP/JSON ids are hex, not base64)"
                ) from None
            obj[key] = b64encode(raw).decode()


def _parse(data: dict[str, Any], message: M, signal: str) -> M:
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput(f"OTLP/JSON {signal} request: {_shorten(str(exc))}") from None
    return message


def _shorten(text: str, limit: int = 500) -> str:
    """json_format nests "Failed to parse X field: " once per level; keep both ends."""
    if len(text) <= limit:
        return text
    return f"{text[:150]} … {text[-(limit - 153) :]}"
