"""One trace read back from the events: its spans as a tree, their span events, its logs.

Herald stores a trace as events (SPEC §4): each span an ``otel.span.<status>`` event whose
related resources name the span (role ``span``), its trace (``trace``) and its parent
(``parent-span``), with kind, status, times and duration in the payload; each span event an
event about the same span whose payload carries ``span_name``; each log record written inside a
span an event related to the trace and the span. Nothing else is stored, so a trace is a query
— the events related to ``otel.trace.<id>`` (``trace_filter``) — and a rule for putting them
back together (``assemble_trace``), the same for every storage backend and both the server and
the CLI's offline reader. ``read_trace`` walks the feed pages of any ``EventReads`` for it.

The answer is JSON-ready (``TraceJson``): what the gRPC ``GetTrace`` reply carries, what
``herald trace -f json`` prints and what the ``/traces/{id}`` page renders. Spans come in tree
order (each parent before its children, siblings by start time) with their ``depth``, so a
waterfall is drawn top to bottom without re-sorting. A span whose parent was not stored (not
exported yet, dropped, or past retention) is shown as a root with ``parent_missing``; so is a
span in a parent cycle (only hostile data has one), which the tree walk never follows twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

import orjson

from collector.domain.event_store import EventReads
from collector.domain.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, ReceivedEvent
from collector.domain.filters import EventFilter, EventOrder, EventRelatedFilter
from collector.domain.filters import EventOccurredFilter as Occurred
from collector.domain.otel_ids import SPAN_PREFIX, TRACE_ROLE, trace_resource_id
from collector.errors import NotFound

# Span events are named otel.span.<status code> (mapping/otlp_traces.py).
SPAN_EVENT_NAMES = frozenset(("otel.span.unset", "otel.span.ok", "otel.span.error"))
# The labels the mapping gives a span's related item itself; the rest are its attributes.
_SPAN_ITEM_KEYS = frozenset(
    (RESOURCE_ID, RESOURCE_ROLE, RESOURCE_NAME, "otel.span.kind", "otel.trace_id")
)
# Keys only a log record's payload has (mapping/otlp_logs.py).
_LOG_KEYS = ("severity_number", "body")

# The most events, and bytes of their payload and related JSON, that one trace query reads;
# past either the answer says ``truncated``. The byte bound keeps one answer well inside the
# 64 MiB gRPC message limit and the server's memory (an event may be 1.5 MB).
MAX_TRACE_EVENTS = 10_000
MAX_TRACE_BYTES = 16 * 1024 * 1024
_PAGE = 250

# Every stored time: the trace is found by its id, whenever its spans ran.
_ALL_TIME = Occurred(
    since=datetime(1970, 1, 1, tzinfo=UTC), until=datetime(9999, 12, 31, tzinfo=UTC)
)


class SpanEventJson(TypedDict):
    event_id: str
    name: str
    time: str
    offset_ms: float | None  # from the trace's start
    attributes: dict[str, Any]


class SpanJson(TypedDict):
    span_id: str
    parent_span_id: str | None
    parent_missing: bool  # has a parent that is not among the stored spans
    depth: int
    name: str
    kind: str
    service: str  # the service's name (the primary resource's name)
    resource_id: str
    scope: str | None
    start_time: str | None
    end_time: str | None
    duration_ms: float | None
    offset_ms: float | None  # start, from the trace's start
    status: dict[str, str]  # {"code": "unset|ok|error", "message": ...}
    attributes: dict[str, str]
    event_id: str
    events: list[SpanEventJson]


class TraceLogJson(TypedDict):
    event_id: str
    event: str
    time: str
    offset_ms: float | None
    span_id: str | None  # the span it was written in (None: outside any stored span)
    service: str
    severity_text: str | None
    severity_number: int | None
    body: Any
    attributes: dict[str, Any]


class TraceJson(TypedDict):
    trace_id: str
    start_time: str | None
    end_time: str | None
    duration_ms: float | None
    services: list[str]
    span_count: int
    error_count: int
    event_count: int
    truncated: bool  # past MAX_TRACE_EVENTS / MAX_TRACE_BYTES: the newer rest was not read
    spans: list[SpanJson]
    logs: list[TraceLogJson]
    # Events of the trace that are neither spans nor logs nor events of a stored span
    # (e.g. a span event whose span was not stored, an emit_event without a span), as
    # Prefect's event JSON.
    other_events: list[dict[str, Any]]


def trace_filter(trace_id: str) -> EventFilter:
    """Every event related to the trace (``trace_id``: 32 lower-case hex), oldest first."""
    return EventFilter(
        occurred=_ALL_TIME,
        related=EventRelatedFilter(role=[TRACE_ROLE], id=[trace_resource_id(trace_id)]),
        order=EventOrder.ASC,
    )


def read_trace(
    reads: EventReads,
    trace_id: str,
    max_events: int = MAX_TRACE_EVENTS,
    max_bytes: int = MAX_TRACE_BYTES,
) -> TraceJson:
    """The trace ``trace_id`` from ``reads`` (feed pages, oldest first); ``NotFound`` when no
    event of it is stored. Reads at most ``max_events`` events and about ``max_bytes`` of
    their JSON (the oldest first), then says ``truncated``. Blocking, like every
    ``EventReads`` call."""
    events: list[ReceivedEvent] = []
    size = 0
    truncated = False
    page = reads.query(trace_filter(trace_id), min(_PAGE, max_events + 1))
    while True:
        for event in page.events:
            size += len(orjson.dumps(event.payload)) + len(orjson.dumps(event.related))
            if len(events) >= max_events or (events and size > max_bytes):
                truncated = True
                break
            events.append(event)
        if truncated or not page.next_page:
            break
        page = reads.query(None, _PAGE, page.next_page)
    if not events:
        raise NotFound(f"no events of trace {trace_id} are stored")
    return assemble_trace(trace_id, events, truncated=truncated)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _item(event: ReceivedEvent, role: str) -> Mapping[str, Any] | None:
    for item in event.related:
        if item.get(RESOURCE_ROLE) == role:
            return item
    return None


def _span_hex(item: Mapping[str, Any] | None) -> str | None:
    rid = item.get(RESOURCE_ID) if item else None
    if isinstance(rid, str) and rid.startswith(SPAN_PREFIX):
        return rid[len(SPAN_PREFIX) :]
    return None


def _service(event: ReceivedEvent) -> str:
    name = event.resource.get(RESOURCE_NAME)
    return str(name) if name else str(event.resource.get(RESOURCE_ID, ""))


def _is_span(event: ReceivedEvent) -> bool:
    payload = event.payload
    return event.event in SPAN_EVENT_NAMES and "status" in payload and "kind" in payload


def _is_log(event: ReceivedEvent) -> bool:
    return all(key in event.payload for key in _LOG_KEYS)


def _ms(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds() * 1000, 3)


def assemble_trace(
    trace_id: str, events: Iterable[ReceivedEvent], *, truncated: bool = False
) -> TraceJson:
    """Put a trace's events back together (see the module's docstring)."""
    spans: dict[str, SpanJson] = {}
    starts: dict[str, datetime] = {}  # each span's start (its event's time if unknown)
    firsts: list[datetime] = []  # when each event began, and ended: the trace's extent
    lasts: list[datetime] = []
    span_events: list[tuple[str | None, ReceivedEvent]] = []
    logs: list[ReceivedEvent] = []
    count = 0
    for event in events:
        count += 1
        span_item = _item(event, "span")
        span_id = _span_hex(span_item)
        if _is_span(event) and span_id in spans:
            span_id = None  # the same span twice (only hand-made data): shown as it is
        elif _is_span(event) and span_id:
            payload = event.payload
            # Native events may borrow the names: read the payload defensively.
            status = payload.get("status")
            status = status if isinstance(status, dict) else {}
            duration = payload.get("duration_ms")
            start = _parse_time(payload.get("start_time"))
            end = _parse_time(payload.get("end_time"))
            scope = _item(event, "scope")
            assert span_item is not None  # span_id came from it
            spans[span_id] = {
                "span_id": span_id,
                "parent_span_id": _span_hex(_item(event, "parent-span")),
                "parent_missing": False,
                "depth": 0,
                "name": str(span_item.get(RESOURCE_NAME, "")),
                "kind": str(payload.get("kind") or "unspecified"),
                "service": _service(event),
                "resource_id": str(event.resource.get(RESOURCE_ID, "")),
                "scope": str(scope[RESOURCE_ID]).removeprefix("otel.scope.") if scope else None,
                "start_time": _iso(start) if start else None,
                "end_time": _iso(end) if end else None,
                "duration_ms": float(duration) if isinstance(duration, int | float) else None,
                "offset_ms": None,
                "status": {
                    "code": str(status.get("code") or "unset"),
                    "message": str(status.get("message") or ""),
                },
                "attributes": {k: str(v) for k, v in span_item.items() if k not in _SPAN_ITEM_KEYS},
                "event_id": str(event.id),
                "events": [],
            }
            starts[span_id] = start or event.occurred
            firsts.append(start or event.occurred)
            lasts.append(end or event.occurred)
            continue
        if _is_log(event):
            logs.append(event)
        else:
            span_events.append((span_id, event))
        firsts.append(event.occurred)
        lasts.append(event.occurred)
    trace_start = min(firsts, default=None)
    trace_end = max(lasts, default=None)

    other: list[dict[str, Any]] = []
    for span_id, event in span_events:
        span = spans.get(span_id) if span_id else None
        if span is None:
            other.append(event.to_dict())
            continue
        attributes = {k: v for k, v in event.payload.items() if k != "span_name"}
        span["events"].append(
            {
                "event_id": str(event.id),
                "name": event.event,
                "time": _iso(event.occurred),
                "offset_ms": _ms(event.occurred, trace_start),
                "attributes": attributes,
            }
        )
    for span_id, span in spans.items():
        span["offset_ms"] = _ms(starts[span_id], trace_start)
        span["events"].sort(key=lambda e: e["time"])

    ordered = _tree_order(spans, starts)
    trace_logs: list[TraceLogJson] = []
    for log in sorted(logs, key=lambda e: e.occurred):
        payload = log.payload
        number = payload.get("severity_number")
        text = payload.get("severity_text")
        log_attributes = payload.get("attributes")
        trace_logs.append(
            {
                "event_id": str(log.id),
                "event": log.event,
                "time": _iso(log.occurred),
                "offset_ms": _ms(log.occurred, trace_start),
                "span_id": _span_hex(_item(log, "span")),
                "service": _service(log),
                "severity_text": text if isinstance(text, str) else None,
                "severity_number": number if isinstance(number, int) else None,
                "body": payload.get("body"),
                "attributes": log_attributes if isinstance(log_attributes, dict) else {},
            }
        )
    return {
        "trace_id": trace_id,
        "start_time": _iso(trace_start) if trace_start else None,
        "end_time": _iso(trace_end) if trace_end else None,
        "duration_ms": _ms(trace_end, trace_start),
        "services": sorted({s["service"] for s in ordered}),
        "span_count": len(ordered),
        "error_count": sum(1 for s in ordered if s["status"]["code"] == "error"),
        "event_count": count,
        "truncated": truncated,
        "spans": ordered,
        "logs": trace_logs,
        "other_events": other,
    }


def _tree_order(spans: dict[str, SpanJson], starts: Mapping[str, datetime]) -> list[SpanJson]:
    """Parents before children, siblings by start time; depth set on the way. Iterative (a
    trace may be thousands of spans deep) and visiting each span once (a parent cycle in
    hostile data cannot loop)."""
    far = datetime.max.replace(tzinfo=UTC)

    def key(span_id: str) -> tuple[datetime, str]:
        return (starts.get(span_id) or far, span_id)

    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for span_id, span in spans.items():
        parent = span["parent_span_id"]
        if parent and parent in spans and parent != span_id:
            children.setdefault(parent, []).append(span_id)
        else:
            span["parent_missing"] = bool(parent)
            roots.append(span_id)
    ordered: list[SpanJson] = []
    seen: set[str] = set()

    def walk(root: str) -> None:
        stack = [(root, 0)]
        while stack:
            span_id, depth = stack.pop()
            if span_id in seen:
                continue
            seen.add(span_id)
            span = spans[span_id]
            span["depth"] = depth
            ordered.append(span)
            for child in sorted(children.get(span_id, ()), key=key, reverse=True):
                stack.append((child, depth + 1))

    for root in sorted(roots, key=key):
        walk(root)
    # Spans only reachable through a cycle: shown as roots.
    for span_id in sorted(set(spans) - seen, key=key):
        spans[span_id]["parent_missing"] = True
        walk(span_id)
    return ordered


def format_ms(ms: float | None) -> str:
    """A duration for people: ``0.42 ms``, ``12.3 ms``, ``1.25 s``, ``2 min 5 s`` (the
    terminal and the web page show the same)."""
    if ms is None:
        return "?"
    if ms == 0:
        return "0 ms"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{minutes:.0f} min {seconds:.0f} s"


def tree_guides(depths: Sequence[int]) -> list[str]:
    """Tree guides (``├─``, ``└─``, ``│``) for spans in tree order with these depths (the
    terminal and the web page draw the same tree).

    One backward pass finds which span is the last of its siblings (no later span at its
    depth before a shallower one); a forward pass draws each level's guide."""
    last = [True] * len(depths)
    later: list[bool] = []  # per depth: a later sibling was seen (walking backwards)
    for i in range(len(depths) - 1, -1, -1):
        d = depths[i]
        del later[d + 1 :]
        while len(later) <= d:
            later.append(False)
        last[i] = not later[d]
        later[d] = True
    prefixes: list[str] = []
    open_levels: list[bool] = []  # per ancestor depth: more siblings follow (draw │)
    for i, d in enumerate(depths):
        del open_levels[d:]
        guides = "".join("│  " if more else "   " for more in open_levels[1:])
        prefixes.append("" if d == 0 else guides + ("└─ " if last[i] else "├─ "))
        while len(open_levels) < d:
            open_levels.append(False)
        open_levels.append(not last[i])
    return prefixes


__all__ = [
    "MAX_TRACE_BYTES",
    "MAX_TRACE_EVENTS",
    "SpanEventJson",
    "SpanJson",
    "TraceJson",
    "TraceLogJson",
    "assemble_trace",
    "format_ms",
    "read_trace",
    "trace_filter",
    "tree_guides",
]
