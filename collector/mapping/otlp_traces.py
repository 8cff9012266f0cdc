"""OTLP traces → events (SPEC §4): one event per span, one per span event.

A span becomes ``otel.span.unset|ok|error`` about its service (the OTel Resource), with the
span, its trace, its parent, its scope and its links as related resources; each span event
becomes an event named verbatim (``exception``…) about the same service. Ids are derived from
trace_id + span_id (+ the event's index), so a retried export is stored once.

Invalid spans (missing/zero/wrong-length ids, an event over the size limit) are rejected one by
one with a reason; the rest of the request is still mapped. Over-long label sets and related
lists are cut and the cut recorded under ``payload["herald.truncated"]``.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.domain.columns import EventColumns
from collector.domain.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Limits
from collector.mapping.otlp_common import (
    TRUNCATED,
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    MappingResult,
    attributes_to_labels,
    attributes_to_values,
    derived_id,
    iso_from_us,
    merge_labels,
    resource_labels,
    scope_related,
)

# Span.SpanKind and Status.StatusCode by number; values outside the enum (proto3 enums are
# open) read as "unspecified" / "unset".
SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
SPAN_EVENT_NAMES = tuple(f"otel.span.{code}" for code in STATUS_CODES)

KIND_LABEL = "otel.span.kind"
TRACE_ID_LABEL = "otel.trace_id"

# Room for the event's fixed JSON (keys, id, times, event name) in the size estimate.
_EVENT_OVERHEAD = 300


def traces_to_events(
    request: ExportTraceServiceRequest, received_us: int, limits: Limits
) -> MappingResult:
    """Map an ``ExportTraceServiceRequest`` to events; ``received_us`` stamps undated spans.

    One loop, few helper calls: this runs per span on the ingest hot path, and Python function
    calls are a large share of the cost per span.
    """
    cols = EventColumns()
    result = MappingResult(cols)
    append = cols.append
    dumps = orjson.dumps
    max_labels = limits.max_labels_per_resource
    max_related = limits.max_related_resources
    max_name = limits.max_event_name_length
    max_bytes = limits.max_event_bytes

    for ri, rs in enumerate(request.resource_spans):
        resource, res_cut = resource_labels(rs.resource, max_labels)
        # Byte sizes of the parts shared by many events, for the event size check.
        res_size = len(dumps(resource)) + _EVENT_OVERHEAD
        for si, ss in enumerate(rs.scope_spans):
            scope_item = scope_related(ss.scope)
            shared_size = res_size + (len(dumps(scope_item)) if scope_item else 0)
            for pi, span in enumerate(ss.spans):
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                status = span.status
                code = status.code
                event_name = SPAN_EVENT_NAMES[code] if 0 <= code <= 2 else SPAN_EVENT_NAMES[0]
                problem = None
                if len(trace_id) != 16 or trace_id == ZERO_TRACE_ID:
                    problem = "trace_id must be 16 bytes, not all zero"
                elif len(span_id) != 8 or span_id == ZERO_SPAN_ID:
                    problem = "span_id must be 8 bytes, not all zero"
                elif parent and len(parent) != 8:
                    problem = "parent_span_id must be empty or 8 bytes"
                elif len(event_name) > max_name:
                    problem = f"event name must be at most {max_name} characters"
                if problem:
                    result.reject(f"{_where(ri, si, pi, span)}: {problem}")
                    continue

                trace_hex = trace_id.hex()
                name = span.name
                kind = span.kind
                kind_s = SPAN_KINDS[kind] if 0 <= kind <= 5 else "unspecified"
                # The span as a related resource without its attributes: span events use this.
                span_base = {
                    RESOURCE_ID: "otel.span." + span_id.hex(),
                    RESOURCE_ROLE: "span",
                    RESOURCE_NAME: name,
                    KIND_LABEL: kind_s,
                    TRACE_ID_LABEL: trace_hex,
                }
                truncated: dict[str, int] | None = {"resource": res_cut} if res_cut else None
                attrs = span.attributes
                if attrs:
                    span_item, cut = merge_labels(
                        span_base, attributes_to_labels(attrs), max_labels
                    )
                    if cut:
                        truncated = truncated or {}
                        truncated["span"] = cut
                else:
                    span_item = span_base
                trace_item = {RESOURCE_ID: "otel.trace." + trace_hex, RESOURCE_ROLE: "trace"}
                related = [span_item, trace_item]
                if parent and parent != ZERO_SPAN_ID:
                    related.append(
                        {RESOURCE_ID: "otel.span." + parent.hex(), RESOURCE_ROLE: "parent-span"}
                    )
                if scope_item is not None:
                    related.append(scope_item)
                links = span.links
                cut = _add_links(links, related, max_related) if links else 0
                if len(related) > max_related:
                    cut += len(related) - max_related
                    del related[max_related:]
                if cut:
                    truncated = truncated or {}
                    truncated["related"] = cut

                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                payload: dict[str, Any] = {
                    "kind": kind_s,
                    "status": {
                        "code": STATUS_CODES[code] if 0 <= code <= 2 else "unset",
                        "message": status.message,
                    },
                    "start_time": iso_from_us(start // 1000) if start else None,
                    "end_time": iso_from_us(end // 1000) if end else None,
                    "duration_ms": (end - start) / 1_000_000 if start and end else None,
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "dropped_attributes_count": span.dropped_attributes_count,
                    "dropped_events_count": span.dropped_events_count,
                    "dropped_links_count": span.dropped_links_count,
                }
                if truncated:
                    payload[TRUNCATED] = truncated
                payload_bytes = dumps(payload)
                # The span's labels are the one big part of unknown size (orjson measures them
                # faster than summing lengths); the other related items are ids, ~100 bytes.
                size = shared_size + len(payload_bytes) + len(dumps(span_item)) + 100 * len(related)
                if size > max_bytes:
                    result.reject(
                        f"{_where(ri, si, pi, span)}: event is about {size} bytes of JSON; "
                        f"at most {max_bytes} are allowed"
                    )
                    continue
                occurred = end // 1000 if end else (start // 1000 if start else received_us)
                append(
                    derived_id(b"span", trace_id, span_id),
                    occurred,
                    event_name,
                    resource,
                    related,
                    payload_bytes.decode(),
                )

                events = span.events
                if events:
                    ev_related = [span_base, trace_item]
                    if scope_item is not None:
                        ev_related.append(scope_item)
                    ev_truncated = {"resource": res_cut} if res_cut else None
                    if len(ev_related) > max_related:
                        ev_truncated = ev_truncated or {}
                        ev_truncated["related"] = len(ev_related) - max_related
                        del ev_related[max_related:]
                    # span name (twice: label and payload) and ids bound the rest of the size
                    ev_shared_size = shared_size + 12 * len(name) + 200
                    for ei, ev in enumerate(events):
                        ev_name = ev.name
                        if not ev_name or len(ev_name) > max_name:
                            result.note(
                                f"{_where(ri, si, pi, span)}, event {ei}: event name must be "
                                f"1 to {max_name} characters; the span was kept without it"
                            )
                            continue
                        ev_attrs = ev.attributes
                        ev_payload = attributes_to_values(ev_attrs) if ev_attrs else {}
                        # Herald's keys win over an attribute of the same name.
                        ev_payload["span_name"] = name
                        if ev_truncated:
                            ev_payload[TRUNCATED] = ev_truncated
                        ev_bytes = dumps(ev_payload)
                        if ev_shared_size + len(ev_bytes) + 4 * len(ev_name) > max_bytes:
                            result.note(
                                f"{_where(ri, si, pi, span)}, event {ei}: event is about "
                                f"{ev_shared_size + len(ev_bytes)} bytes of JSON; at most "
                                f"{max_bytes} are allowed; the span was kept without it"
                            )
                            continue
                        ev_time = ev.time_unix_nano
                        append(
                            derived_id(b"span-event", trace_id, span_id, ei.to_bytes(4, "big")),
                            ev_time // 1000 if ev_time else occurred,
                            ev_name,
                            resource,
                            ev_related,
                            ev_bytes.decode(),
                        )
    return result


def _add_links(links: Any, related: list[dict[str, str]], max_related: int) -> int:
    """Append each link as a ``link`` related resource; return how many did not fit.

    A link without a valid span_id cannot name a span and is skipped (OTel APIs keep such
    links when they carry attributes; they have nothing to point at here).
    """
    cut = 0
    for link in links:
        link_span = link.span_id
        if len(link_span) != 8 or link_span == ZERO_SPAN_ID:
            continue
        if len(related) >= max_related:
            cut += 1  # counted, not built: a span may carry many thousands of links
            continue
        item = {RESOURCE_ID: "otel.span." + link_span.hex(), RESOURCE_ROLE: "link"}
        link_trace = link.trace_id
        if len(link_trace) == 16 and link_trace != ZERO_TRACE_ID:
            item[TRACE_ID_LABEL] = link_trace.hex()
        related.append(item)
    return cut


def _where(ri: int, si: int, pi: int, span: Any) -> str:
    """Names a span in a reason the way a user can find it in their request."""
    return f"span {pi} of scope {si} of resource {ri} ({span.name[:80]!r})"
