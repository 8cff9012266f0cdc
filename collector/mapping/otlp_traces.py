"""OTLP traces → events (SPEC §4): one event per span, one per span event.

A span becomes ``otel.span.unset|ok|error`` about its service (the OTel Resource), with the
span, its trace, its parent, its scope and its links as related resources; each span event
becomes an event named verbatim (``exception``…) about the same service. Ids are derived from
trace_id + span_id (+ the event's index), so a retried export is stored once.

Invalid spans (missing/zero/wrong-length ids, a start or end time outside the range Herald
accepts, an event over the size limit) are rejected one by one with a reason; the rest of the
request is still mapped. A span event with such a problem is left out and the span kept. An
unexpected failure mapping one span is that span's rejection too (``MappingResult.fail``).
Over-long label sets and related lists are cut and the cut recorded under
``payload["herald.truncated"]``.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.domain.columns import EventColumns
from collector.domain.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
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

# JSON fragments of the related items Herald writes itself (keys and values need no escaping).
_TRACE_ROLE = f'"{RESOURCE_ROLE}":"trace"'
_PARENT_ROLE = f'"{RESOURCE_ROLE}":"parent-span"'
_LINK_ROLE = f'"{RESOURCE_ROLE}":"link"'


def traces_to_events(
    request: ExportTraceServiceRequest, received_us: int, limits: Limits
) -> MappingResult:
    """Map an ``ExportTraceServiceRequest`` to events; ``received_us`` stamps undated spans.

    One loop, few helper calls: this runs per span on the ingest hot path, and Python function
    calls are a large share of the cost per span. Labels go into the columns as JSON text, so
    what many events share is serialized once: the resource per ``ResourceSpans``, the
    related list of a span's events per span. The JSON that is stored is also what the size
    check measures.
    """
    cols = EventColumns()
    result = MappingResult(cols)
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

    for ri, rs in enumerate(request.resource_spans):
        try:
            resource, res_cut = resource_labels(rs.resource, max_labels)
            resource_id = resource[RESOURCE_ID]
            resource_json = dumps(resource).decode()
        except Exception as exc:
            n = sum(len(ss.spans) for ss in rs.scope_spans)
            result.fail(f"resource {ri} and its {n} span(s)", exc, items=n)
            continue
        res_size = len(resource_json) + _EVENT_OVERHEAD
        # The JSON of a span's trace item is rebuilt only when the trace changes (SDKs send a
        # trace's spans together).
        last_trace_id = b""
        trace_hex = trace_json = ""
        for si, ss in enumerate(rs.scope_spans):
            scope_item = scope_related(ss.scope)
            scope_json = dumps(scope_item).decode() if scope_item is not None else ""
            for pi, span in enumerate(ss.spans):
                # Whatever goes wrong mapping one span is that span's error: the rest of the
                # request is still stored (a try block costs nothing until it raises).
                try:
                    trace_id = span.trace_id
                    span_id = span.span_id
                    parent = span.parent_span_id
                    status = span.status
                    code = status.code
                    event_name = SPAN_EVENT_NAMES[code] if 0 <= code <= 2 else SPAN_EVENT_NAMES[0]
                    # 0 means "unknown" (OTLP); anything else must be a time Herald can store.
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano
                    problem = None
                    if len(trace_id) != 16 or trace_id == ZERO_TRACE_ID:
                        problem = "trace_id must be 16 bytes, not all zero"
                    elif len(span_id) != 8 or span_id == ZERO_SPAN_ID:
                        problem = "span_id must be 8 bytes, not all zero"
                    elif parent and len(parent) != 8:
                        problem = "parent_span_id must be empty or 8 bytes"
                    elif len(event_name) > max_name:
                        problem = f"event name must be at most {max_name} characters"
                    elif start and not earliest_ns <= start <= latest_ns:
                        problem = f"start_time_unix_nano={start}: {out_of_range(start)}"
                    elif end and not earliest_ns <= end <= latest_ns:
                        problem = f"end_time_unix_nano={end}: {out_of_range(end)}"
                    if problem:
                        result.reject(f"{_where(ri, si, pi, span)}: {problem}")
                        continue

                    if trace_id != last_trace_id:
                        last_trace_id = trace_id
                        trace_hex = trace_id.hex()
                        trace_json = f'{{"{RESOURCE_ID}":"otel.trace.{trace_hex}",{_TRACE_ROLE}}}'
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
                    span_json = dumps(span_item).decode()
                    # The related list is joined from JSON parts: ids and roles need no escaping,
                    # and the trace and scope parts are shared by many spans.
                    related = [span_json, trace_json]
                    if parent and parent != ZERO_SPAN_ID:
                        related.append(
                            f'{{"{RESOURCE_ID}":"otel.span.{parent.hex()}",{_PARENT_ROLE}}}'
                        )
                    if scope_json:
                        related.append(scope_json)
                    links = span.links
                    cut = _add_links(links, related, max_related) if links else 0
                    if len(related) > max_related:
                        cut += len(related) - max_related
                        del related[max_related:]
                    if cut:
                        truncated = truncated or {}
                        truncated["related"] = cut
                    related_json = "[" + ",".join(related) + "]"

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
                    payload_json = dumps(payload).decode()
                    size = res_size + len(payload_json) + len(related_json)
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
                        resource_id,
                        resource_json,
                        related_json,
                        payload_json,
                    )

                except Exception as exc:
                    result.fail(_where(ri, si, pi, span), exc)
                    continue
                events = span.events
                if events:
                    base_json = span_json if span_item is span_base else dumps(span_base).decode()
                    ev_related = [base_json, trace_json]
                    if scope_json:
                        ev_related.append(scope_json)
                    ev_truncated = {"resource": res_cut} if res_cut else None
                    if len(ev_related) > max_related:
                        ev_truncated = ev_truncated or {}
                        ev_truncated["related"] = len(ev_related) - max_related
                        del ev_related[max_related:]
                    # The span's events share their related list: serialized once.
                    ev_related_json = "[" + ",".join(ev_related) + "]"
                    # + the span name in the payload (at most 6 bytes a character escaped)
                    ev_shared_size = res_size + len(ev_related_json) + 6 * len(name)
                    for ei, ev in enumerate(events):
                        try:
                            ev_name = ev.name
                            if not ev_name or len(ev_name) > max_name:
                                result.note(
                                    f"{_where(ri, si, pi, span)}, event {ei}: event name must be "
                                    f"1 to {max_name} characters; the span was kept without it"
                                )
                                continue
                            ev_time = ev.time_unix_nano
                            if ev_time and not earliest_ns <= ev_time <= latest_ns:
                                result.note(
                                    f"{_where(ri, si, pi, span)}, event {ei}: "
                                    f"time_unix_nano={ev_time}: {out_of_range(ev_time)}; "
                                    "the span was kept without it"
                                )
                                continue
                            ev_attrs = ev.attributes
                            ev_payload = attributes_to_values(ev_attrs) if ev_attrs else {}
                            # Herald's keys win over an attribute of the same name.
                            ev_payload["span_name"] = name
                            if ev_truncated:
                                ev_payload[TRUNCATED] = ev_truncated
                            ev_bytes = dumps(ev_payload)
                            ev_size = ev_shared_size + len(ev_bytes) + 6 * len(ev_name)
                            if ev_size > max_bytes:
                                result.note(
                                    f"{_where(ri, si, pi, span)}, event {ei}: event is about "
                                    f"{ev_size} bytes of JSON; at most {max_bytes} are allowed; "
                                    "the span was kept without it"
                                )
                                continue
                            append(
                                derived_id(b"span-event", trace_id, span_id, ei.to_bytes(4, "big")),
                                ev_time // 1000 if ev_time else occurred,
                                ev_name,
                                resource_id,
                                resource_json,
                                ev_related_json,
                                ev_bytes.decode(),
                            )
                        except Exception as exc:
                            where = f"{_where(ri, si, pi, span)}, event {ei}"
                            result.fail(where, exc, items=0, kept="the span was kept without it")
    return result


def _add_links(links: Any, related: list[str], max_related: int) -> int:
    """Append each link as a ``link`` related resource (JSON); return how many did not fit.

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
        link_trace = link.trace_id
        trace_label = (
            f',"{TRACE_ID_LABEL}":"{link_trace.hex()}"'
            if len(link_trace) == 16 and link_trace != ZERO_TRACE_ID
            else ""
        )
        related.append(
            f'{{"{RESOURCE_ID}":"otel.span.{link_span.hex()}",{_LINK_ROLE}{trace_label}}}'
        )
    return cut


def _where(ri: int, si: int, pi: int, span: Any) -> str:
    """Names a span in a reason the way a user can find it in their request."""
    return f"span {pi} of scope {si} of resource {ri} ({span.name[:80]!r})"
