"""An OTLP trace or logs export body (protobuf or JSON) → its protobuf request message
(``decode_export``), or straight to its mapped events (``map_export``).

One function for every place that decodes one: the receivers' in-process path and the OTLP
mapping worker processes (``collector/pipeline/otlp_workers.py``), so a bad body gets the same
``InvalidInput`` wherever it was decoded. ``invalid`` is the receiver's wording for a protobuf
body that does not parse, with ``{type}`` (the message name) and ``{error}`` to fill in.
"""

from __future__ import annotations

from typing import Literal

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.domain.events import Limits
from collector.errors import InvalidInput
from collector.mapping.otlp_common import MappingResult
from collector.mapping.otlp_json import parse_logs_json, parse_traces_json
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events

Signal = Literal["traces", "logs"]

INVALID_PROTOBUF = "body is not a valid {type} protobuf message: {error}"


def decode_export(
    signal: Signal, body: bytes, *, json: bool = False, invalid: str = INVALID_PROTOBUF
) -> ExportTraceServiceRequest | ExportLogsServiceRequest:
    """The export request in ``body``; ``InvalidInput`` when it is not one."""
    if json:
        return parse_traces_json(body) if signal == "traces" else parse_logs_json(body)
    request = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
    _parse(request, body, invalid)
    return request


def map_export(
    signal: Signal,
    body: bytes,
    received_us: int,
    limits: Limits,
    *,
    json: bool = False,
    invalid: str = INVALID_PROTOBUF,
) -> MappingResult:
    """``decode_export`` then the signal's mapper (``traces_to_events`` / ``logs_to_events``)."""
    if signal == "traces":
        traces = ExportTraceServiceRequest()
        if json:
            traces = parse_traces_json(body)
        else:
            _parse(traces, body, invalid)
        return traces_to_events(traces, received_us, limits)
    logs = ExportLogsServiceRequest()
    if json:
        logs = parse_logs_json(body)
    else:
        _parse(logs, body, invalid)
    return logs_to_events(logs, received_us, limits)


def _parse(
    request: ExportTraceServiceRequest | ExportLogsServiceRequest, body: bytes, invalid: str
) -> None:
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidInput(invalid.format(type=type(request).__name__, error=exc)) from None
