"""``GET /events/{id}``: one event — its resource's labels, related resources with roles, the
payload as a collapsible tree, the raw event JSON to copy, links to the resource's events and
(OTel events) to the trace, and **Automate**."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from collector.config import Scope
from collector.errors import NotFound
from collector.server.http_server import Route
from collector.web.context import WebContext
from collector.web.feed_query import FeedQuery
from collector.web.formatting import RESOURCE_ID, RESOURCE_ROLE, pretty_json

TRACE_ID_LABEL = "otel.trace_id"
TRACE_RESOURCE = re.compile(r"^otel\.trace\.([0-9a-f]{32})$")
UUID_TEXT = re.compile(r"^[0-9a-fA-F-]{32,36}$")


def trace_id_of(event: dict[str, Any]) -> str | None:
    """The OTel trace an event belongs to: a related ``otel.trace.<hex>`` resource (role
    ``trace``) or the resource's ``otel.trace_id`` label."""
    for r in event.get("related") or []:
        m = TRACE_RESOURCE.match(r.get(RESOURCE_ID, ""))
        if m and r.get(RESOURCE_ROLE) == "trace":
            return m.group(1)
    label = (event.get("resource") or {}).get(TRACE_ID_LABEL, "")
    return label if re.fullmatch(r"[0-9a-f]{32}", label) else None


def event_routes(ctx: WebContext) -> list[Route]:
    async def event_page(request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["id"]
        if not UUID_TEXT.match(event_id):
            raise NotFound(f"no event {event_id!r} (an event id is a UUID)")
        stored = await asyncio.to_thread(ctx.reader.get, event_id)
        event = stored.to_dict()
        resource_id = event["resource"].get(RESOURCE_ID, "")
        labels = sorted((k, v) for k, v in event["resource"].items() if k != RESOURCE_ID)
        related = [
            {
                "id": r.get(RESOURCE_ID, ""),
                "role": r.get(RESOURCE_ROLE, ""),
                "labels": sorted(
                    (k, v) for k, v in r.items() if k not in (RESOURCE_ID, RESOURCE_ROLE)
                ),
                "raw": r,
            }
            for r in event.get("related") or []
        ]
        feed = FeedQuery(range="7d")
        return ctx.pages.page(
            "event.html",
            nav="feed",
            event=event,
            resource_id=resource_id,
            labels=labels,
            related=related,
            raw_json=pretty_json(event),
            resource_events_url=feed.url(resource=resource_id),
            name_events_url=feed.url(event=event["event"]),
            feed=feed,
            trace_id=trace_id_of(event),
        )

    return [Route("GET", "/events/{id}", ctx.html_errors(event_page), Scope.READ, ctx.error_page)]
