"""The feed: ``GET /`` (filters, newest events, keyset pages), ``GET /histogram`` (its chart,
fetched by the page once it shows) and ``GET /live`` (its live mode, see ``live.py``). Filters
come from the URL (``feed_query.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Any

from aiohttp import web

from collector.config import Scope
from collector.domain.feed import Page
from collector.domain.filters import EventFilter, parse_filter
from collector.errors import HeraldError, InvalidFilter
from collector.server.http_server import Route, json_error
from collector.web.context import WebContext
from collector.web.feed_query import PRESETS, FeedQuery, bucket_seconds, parse_time
from collector.web.formatting import row_view
from collector.web.histogram import Histogram, build_histogram
from collector.web.rendering import SECURITY_HEADERS

PAGE_SIZE = 50
INPUT_FORMAT = "%Y-%m-%dT%H:%M:%S"


def bucket_text(seconds: float) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def feed_routes(ctx: WebContext) -> list[Route]:
    reader = ctx.reader

    def histogram(query: FeedQuery, filter: EventFilter, now: datetime) -> Histogram | None:
        since, until = query.window(now)
        step = bucket_seconds(since, until)
        try:
            counts = reader.count(filter, "time", "second", step)
        except InvalidFilter:  # a range too long for the bucket limit: the list still shows
            return None
        return build_histogram(counts, since, until, query.zoom)

    async def feed(request: web.Request) -> web.StreamResponse:
        error = ""
        page = Page([], 0, None)
        try:
            query = FeedQuery.parse(request.query)
        except HeraldError as exc:
            query, error = FeedQuery(), str(exc)
        now = ctx.clock.now()
        histogram_url = ""
        if not error:
            try:
                filter = parse_filter(query.to_filter(now))
                if query.page:
                    page = await asyncio.to_thread(reader.query, None, None, query.page)
                else:
                    page = await asyncio.to_thread(reader.query, filter, PAGE_SIZE)
                # The histogram is its own request, fetched once the list shows: the page's
                # HTML waits for one query, not two. Its range is this page's, to the µs.
                since, until = query.window(now)
                histogram_url = replace(
                    query, range="", since=since.isoformat(), until=until.isoformat()
                ).url("/histogram")
            except InvalidFilter as exc:
                error = str(exc)
        status = 400 if error else 200
        since_input = until_input = ""
        if query.custom and not error:
            since, until = query.window(now)
            since_input, until_input = since.strftime(INPUT_FORMAT), until.strftime(INPUT_FORMAT)
        rows = [row_view(e.to_dict(), query.url, now) for e in page.events]
        live_query = FeedQuery(
            event=query.event,
            resource=query.resource,
            labels=query.labels,
            related=query.related,
            role=query.role,
            q=query.q,
        )
        return ctx.pages.page(
            "feed.html",
            status=status,
            nav="feed",
            query=query,
            presets=list(PRESETS),
            since_input=since_input,
            until_input=until_input,
            error=error,
            histogram_url=histogram_url,
            rows=rows,
            total=page.total,
            total_is_lower_bound=page.total_is_lower_bound,
            next_url=query.url(page=page.next_page) if page.next_page else "",
            page_size=PAGE_SIZE,
            live_allowed=not query.custom and not query.page and not error,
            live_url=live_query.url("/live"),
        )

    async def histogram_fragment(request: web.Request) -> web.StreamResponse:
        hist: Histogram | None = None
        error = ""
        query = FeedQuery()
        try:
            query = FeedQuery.parse(request.query)
            now = ctx.clock.now()
            filter = parse_filter(query.to_filter(now))
            hist = await asyncio.to_thread(histogram, query, filter, now)
        except InvalidFilter as exc:
            error = str(exc)
        html = ctx.pages.fragment(
            "_histogram.html",
            histogram=hist,
            bucket_text=bucket_text(bucket_seconds(hist.since, hist.until)) if hist else "",
            query=query,
            error=error,
        )
        return web.Response(
            text=html,
            status=400 if error else 200,
            content_type="text/html",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    async def live(request: web.Request) -> web.StreamResponse:
        query = FeedQuery.parse(request.query)
        filter = parse_filter(query.to_filter(ctx.clock.now(), live=True))
        after_text = request.query.get("after", "")
        after = parse_time(after_text, "after") if after_text else None

        def render(rows: list[dict[str, Any]]) -> str:
            now = ctx.clock.now()
            views = [row_view(e, query.url, now) for e in rows]
            return ctx.pages.fragment("_rows.html", rows=views)

        return await ctx.live.serve(request, ctx.tail, reader, filter, after, render)

    async def live_guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await live(request)
        except HeraldError as exc:
            return json_error(exc)

    return [
        Route("GET", "/", feed, Scope.READ, ctx.error_page),
        Route("GET", "/histogram", histogram_fragment, Scope.READ),
        Route("GET", "/live", live_guarded, Scope.READ),
    ]
