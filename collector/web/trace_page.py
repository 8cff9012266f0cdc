"""``GET /traces/{trace_id}``: one trace as a waterfall — its spans in tree order with service,
name, start, duration and status, each span's events and logs inline beneath it, its other
events at the end. The trace comes from ``domain/traces.read_trace`` (the same answer as
``herald trace`` and ``GET /api/traces/{trace_id}``).

The bars are server-drawn SVG (attributes, not inline styles: the page's CSP forbids those),
positioned on a 0–1000 scale of the trace's duration; the tree is drawn with the same guides
as the terminal's (``tree_guides``). No script is needed to read the page.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from collector.config import Scope
from collector.domain.otel_ids import parse_trace_id, trace_resource_id
from collector.domain.traces import (
    SpanJson,
    TraceJson,
    TraceLogJson,
    format_ms,
    read_trace,
    tree_guides,
)
from collector.server.http_server import Route
from collector.web.context import WebContext
from collector.web.feed_query import FeedQuery

SCALE = 1000  # the bars' coordinate range (the SVG viewBox width)
MIN_BAR = 3  # a span too short to see still gets a sliver


@dataclass
class Item:
    """A span event or a log, shown beneath its span."""

    kind: str  # "event" | "log"
    event_id: str
    label: str  # the event's name, or the log's severity
    text: str  # the log's body ("" for span events)
    at: str  # offset from the trace's start, formatted
    x: int  # marker position on the bar scale
    attributes: dict[str, Any]
    severe: bool = False  # an ERROR/FATAL log or an exception event


@dataclass
class Row:
    """One span of the waterfall."""

    span: SpanJson
    guides: str
    start: str
    duration: str
    x: int
    width: int
    items: list[Item] = field(default_factory=list)
    # the guide that continues beneath the span (for its items' rows)
    inner: str = ""


def _x(offset: float | None, total: float | None) -> int:
    if offset is None or not total or total <= 0:
        return 0
    return max(0, min(SCALE, round(offset / total * SCALE)))


def _log_item(log: TraceLogJson, total: float | None) -> Item:
    body = log["body"]
    return Item(
        kind="log",
        event_id=log["event_id"],
        label=log["severity_text"] or log["event"],
        text=body if isinstance(body, str) else "" if body is None else str(body),
        at=format_ms(log["offset_ms"]),
        x=_x(log["offset_ms"], total),
        attributes=log["attributes"],
        severe=(log["severity_number"] or 0) >= 17,  # ERROR and FATAL
    )


def waterfall(trace: TraceJson) -> tuple[list[Row], list[Item]]:
    """The rows of the page: spans in tree order with their bars and items, and the logs that
    belong to no stored span."""
    total = trace["duration_ms"]
    spans = trace["spans"]
    depths = [s["depth"] for s in spans]
    logs: dict[str | None, list[TraceLogJson]] = {}
    for log in trace["logs"]:
        logs.setdefault(log["span_id"], []).append(log)
    rows: list[Row] = []
    for i, (span, guides) in enumerate(zip(spans, tree_guides(depths), strict=True)):
        x = _x(span["offset_ms"], total)
        width = _x(span["duration_ms"], total) if span["duration_ms"] is not None else 0
        has_children = i + 1 < len(spans) and depths[i + 1] > depths[i]
        inner = guides.replace("├─ ", "│  ").replace("└─ ", "   ")
        inner += "│  " if has_children else "   "
        items = [
            Item(
                kind="event",
                event_id=e["event_id"],
                label=e["name"],
                text="",
                at=format_ms(e["offset_ms"]),
                x=_x(e["offset_ms"], total),
                attributes=e["attributes"],
                severe=e["name"] == "exception",
            )
            for e in span["events"]
        ]
        items += [_log_item(log, total) for log in logs.pop(span["span_id"], [])]
        items.sort(key=lambda item: (item.x, item.kind))
        rows.append(
            Row(
                span=span,
                guides=guides,
                start=format_ms(span["offset_ms"]),
                duration=format_ms(span["duration_ms"]),
                x=min(x, SCALE - MIN_BAR),
                width=max(MIN_BAR, min(width, SCALE - x)),
                items=items,
                inner=inner,
            )
        )
    loose = [_log_item(log, total) for rest in logs.values() for log in rest]
    return rows, loose


def _window(trace: TraceJson) -> FeedQuery:
    """The feed over the trace's events: its extent, a minute either side."""
    if not trace["start_time"] or not trace["end_time"]:
        return FeedQuery(range="7d")
    start = datetime.fromisoformat(trace["start_time"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(trace["end_time"].replace("Z", "+00:00"))
    margin = timedelta(minutes=1)
    return FeedQuery(since=(start - margin).isoformat(), until=(end + margin).isoformat())


def trace_routes(ctx: WebContext) -> list[Route]:
    async def trace_page(request: web.Request) -> web.StreamResponse:
        trace_id = parse_trace_id(request.match_info["trace_id"])
        trace = await asyncio.to_thread(read_trace, ctx.reader, trace_id)
        rows, loose = waterfall(trace)
        feed = _window(trace)
        return ctx.pages.page(
            "trace.html",
            nav="traces",
            trace=trace,
            rows=rows,
            loose_logs=loose,
            duration=format_ms(trace["duration_ms"]),
            scale=SCALE,
            feed=feed,
            trace_events_url=feed.url(related=trace_resource_id(trace_id), role="trace"),
        )

    return [
        Route("GET", "/traces/{trace_id}", ctx.html_errors(trace_page), Scope.READ, ctx.error_page)
    ]
