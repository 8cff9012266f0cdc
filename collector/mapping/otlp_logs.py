"""OTLP logs → events (SPEC §4): one event per LogRecord.

The event name is the record's ``event_name``, else its (deprecated) ``event.name`` attribute,
else ``otel.log.<severity>``. The primary resource is the service (the OTel Resource), related
are the trace and span the record was logged in (when its ids are valid) and its scope. The id
is derived from the record's serialized content plus its resource and scope, so re-sending the
same record stores it once.

Records whose event name is over the limit, whose time or observed time lies outside the range
Herald accepts, or whose event would exceed the size limit, are rejected one by one with a
reason; the rest of the request is still mapped. An unexpected failure mapping one record is
that record's rejection too (``MappingResult.fail``).
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.domain.columns import EventColumns
from collector.domain.events import (
    RESOURCE_ID,
    RESOURCE_ROLE,
    Limits,
    occurred_range_us,
    time_out_of_range,
)
from collector.mapping.otlp_common import (
    TRUNCATED,
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    MappingResult,
    any_value,
    attributes_to_values,
    derived_id,
    identity_digest,
    iso_from_us,
    resource_labels,
    scope_related,
)

# severity_number → the event name's last part (logs data model: 1–4 TRACE … 21–24 FATAL).
SEVERITIES = ("trace", "debug", "info", "warn", "error", "fatal")
SEVERITY_EVENT_NAMES = (
    "otel.log.unspecified",
    *[f"otel.log.{severity}" for severity in SEVERITIES for _ in range(4)],
)

# Room for the event's fixed JSON (keys, id, time, related ids) in the size check.
_EVENT_OVERHEAD = 600


def severity_event_name(severity_number: int) -> str:
    """``otel.log.info`` for 9–12 and so on; ``otel.log.unspecified`` for 0 or out of range."""
    if 0 < severity_number < len(SEVERITY_EVENT_NAMES):
        return SEVERITY_EVENT_NAMES[severity_number]
    return SEVERITY_EVENT_NAMES[0]


def logs_to_events(
    request: ExportLogsServiceRequest, received_us: int, limits: Limits
) -> MappingResult:
    """Map an ``ExportLogsServiceRequest`` to events; ``received_us`` stamps undated records."""
    cols = EventColumns()
    result = MappingResult(cols)
    # Labels go into the columns as JSON text; a resource's is serialized once for all of
    # its records.
    append = cols.append_json
    dumps = orjson.dumps
    max_labels = limits.max_labels_per_resource
    max_related = limits.max_related_resources
    max_name = limits.max_event_name_length
    max_bytes = limits.max_event_bytes
    earliest_us, latest_us = occurred_range_us(received_us, limits)
    earliest_ns, latest_ns = earliest_us * 1000, latest_us * 1000 + 999

    def out_of_range(ns: int) -> str:
        return time_out_of_range(ns // 1000, received_us, limits)

    for ri, rl in enumerate(request.resource_logs):
        try:
            resource, res_cut = resource_labels(rl.resource, max_labels)
            resource_id = resource[RESOURCE_ID]
            resource_json = dumps(resource).decode()
        except Exception as exc:
            n = sum(len(sl.log_records) for sl in rl.scope_logs)
            result.fail(f"resource {ri} and its {n} log record(s)", exc, items=n)
            continue
        res_key = identity_digest(rl.resource)
        res_size = len(resource_json) + _EVENT_OVERHEAD
        for si, sl in enumerate(rl.scope_logs):
            scope = sl.scope
            scope_item = scope_related(scope)
            scope_key = identity_digest(scope)
            for li, record in enumerate(sl.log_records):
                # Whatever goes wrong mapping one record is that record's error: the rest of
                # the request is still stored (a try block costs nothing until it raises).
                try:
                    attrs = record.attributes
                    values = attributes_to_values(attrs) if attrs else {}
                    name = record.event_name
                    if not name:
                        attr_name = values.get("event.name")
                        if isinstance(attr_name, str) and attr_name:
                            name = attr_name
                        else:
                            name = severity_event_name(record.severity_number)
                    # 0 means "unknown" (OTLP); anything else must be a time Herald can store.
                    time_ns = record.time_unix_nano
                    observed_ns = record.observed_time_unix_nano
                    if len(name) > max_name:
                        problem = f"event name must be at most {max_name} characters"
                    elif time_ns and not earliest_ns <= time_ns <= latest_ns:
                        problem = f"time_unix_nano={time_ns}: {out_of_range(time_ns)}"
                    elif observed_ns and not earliest_ns <= observed_ns <= latest_ns:
                        problem = (
                            f"observed_time_unix_nano={observed_ns}: {out_of_range(observed_ns)}"
                        )
                    else:
                        problem = None
                    if problem:
                        result.reject(f"{_where(ri, si, li)}: {problem}")
                        continue

                    # Invalid trace context means "not associated with a trace" (logs.proto), not
                    # an invalid record.
                    related = []
                    trace_id = record.trace_id
                    trace_hex = None
                    if len(trace_id) == 16 and trace_id != ZERO_TRACE_ID:
                        trace_hex = trace_id.hex()
                        related.append(
                            {RESOURCE_ID: "otel.trace." + trace_hex, RESOURCE_ROLE: "trace"}
                        )
                    span_id = record.span_id
                    if len(span_id) == 8 and span_id != ZERO_SPAN_ID:
                        span_item = {
                            RESOURCE_ID: "otel.span." + span_id.hex(),
                            RESOURCE_ROLE: "span",
                        }
                        if trace_hex:
                            span_item["otel.trace_id"] = trace_hex
                        related.append(span_item)
                    if scope_item is not None:
                        related.append(scope_item)
                    truncated: dict[str, int] | None = {"resource": res_cut} if res_cut else None
                    if len(related) > max_related:
                        truncated = truncated or {}
                        truncated["related"] = len(related) - max_related
                        del related[max_related:]

                    payload: dict[str, Any] = {
                        "body": any_value(record.body),
                        "attributes": values,
                        "severity_text": record.severity_text,
                        "severity_number": record.severity_number,
                        "observed_time": iso_from_us(observed_ns // 1000) if observed_ns else None,
                        "flags": record.flags,
                        "dropped_attributes_count": record.dropped_attributes_count,
                    }
                    if truncated:
                        payload[TRUNCATED] = truncated
                    payload_bytes = dumps(payload)
                    related_bytes = dumps(related)
                    size = res_size + len(payload_bytes) + len(related_bytes) + 4 * len(name)
                    if size > max_bytes:
                        result.reject(
                            f"{_where(ri, si, li)}: event is about {size} bytes of JSON; "
                            f"at most {max_bytes} are allowed"
                        )
                        continue
                    if time_ns:
                        occurred = time_ns // 1000
                    elif observed_ns:
                        occurred = observed_ns // 1000
                    else:
                        occurred = received_us
                    append(
                        derived_id(
                            b"log", res_key, scope_key, record.SerializeToString(deterministic=True)
                        ),
                        occurred,
                        name,
                        resource_id,
                        resource_json,
                        related_bytes.decode(),
                        payload_bytes.decode(),
                    )
                except Exception as exc:
                    result.fail(_where(ri, si, li), exc)
    return result


def _where(ri: int, si: int, li: int) -> str:
    """Names a record in a reason the way a user can find it in their request."""
    return f"log record {li} of scope {si} of resource {ri}"
