"""The event feed over HTTP in Prefect's shapes (P§4.8): ``POST /api/events/filter``,
``GET /api/events/filter/next?page-token=…``, ``POST /api/events/count-by/{countable}``; and
one trace, ``GET /api/traces/{trace_id}`` (``domain/traces.py``'s JSON, as ``herald trace -f
json`` prints it)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from collector.config import Scope
from collector.domain.event_store import EventReads
from collector.domain.feed import Page
from collector.domain.filters import parse_filter
from collector.domain.otel_ids import parse_trace_id
from collector.domain.traces import read_trace
from collector.errors import HeraldError, InvalidFilter
from collector.server.http_server import Route, json_error, read_body

MAX_LIMIT = 1000


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await read_body(request)
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidFilter(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidFilter("body must be a JSON object")
    return data


def _page_json(request: web.Request, page: Page) -> web.Response:
    next_url = None
    if page.next_page:
        base = f"{request.scheme}://{request.host}"
        next_url = f"{base}/api/events/filter/next?page-token={quote(page.next_page)}"
    body = {
        "events": [e.to_dict() for e in page.events],
        "total": page.total,
        "next_page": next_url,
    }
    if page.total_is_lower_bound:
        # Only then: the rest of the time the page is exactly Prefect's EventPage.
        body["total_is_lower_bound"] = True
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def feed_routes(reader: EventReads) -> list[Route]:
    async def filter_events(request: web.Request) -> web.StreamResponse:
        try:
            data = await _json_body(request)
            limit = data.get("limit", None)
            if limit is not None and (not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT):
                raise InvalidFilter(f"limit: must be an integer from 1 to {MAX_LIMIT}")
            filter = parse_filter(data.get("filter"))
            page = await asyncio.to_thread(reader.query, filter, limit)
        except HeraldError as exc:
            return json_error(exc)
        return _page_json(request, page)

    async def next_page(request: web.Request) -> web.StreamResponse:
        token = request.query.get("page-token")
        try:
            if not token:
                raise InvalidFilter("page-token: required")
            page = await asyncio.to_thread(reader.query, None, None, token)
        except HeraldError as exc:
            return json_error(exc)
        return _page_json(request, page)

    async def count_by(request: web.Request) -> web.StreamResponse:
        try:
            data = await _json_body(request)
            filter = parse_filter(data.get("filter"))
            counts = await asyncio.to_thread(
                reader.count,
                filter,
                request.match_info["countable"],
                data.get("time_unit", "day"),
                data.get("time_interval", 1.0),
            )
        except HeraldError as exc:
            return json_error(exc)
        return web.Response(
            body=orjson.dumps([c.to_dict() for c in counts]), content_type="application/json"
        )

    async def get_trace(request: web.Request) -> web.StreamResponse:
        try:
            trace_id = parse_trace_id(request.match_info["trace_id"])
            trace = await asyncio.to_thread(read_trace, reader, trace_id)
        except HeraldError as exc:
            return json_error(exc)
        return web.Response(body=orjson.dumps(trace), content_type="application/json")

    return [
        Route("GET", "/api/traces/{trace_id}", get_trace, Scope.READ),
        Route("POST", "/api/events/filter", filter_events, Scope.READ),
        Route("GET", "/api/events/filter/next", next_page, Scope.READ),
        Route("POST", "/api/events/count-by/{countable}", count_by, Scope.READ),
    ]
