"""**Automate**: ``GET /automate?event={id}`` is a form prefilled with Prefect's default trigger
for that event (P§5.12); ``POST /automate/preview`` backtests the form's automation over the
last 24 hours ("would have fired N times"). Saving goes to the automations API
(``POST /api/automations/``), which owns every change."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web

from collector.automations.service import validate_automation
from collector.config import Scope
from collector.errors import HeraldError, InvalidInput
from collector.server.http_server import Route, json_error, read_body
from collector.web.context import WebContext
from collector.web.event_page import UUID_TEXT
from collector.web.formatting import RESOURCE_ID, RESOURCE_ROLE, event_label, resource_name

PREVIEW_WINDOW = timedelta(hours=24)
PREVIEW_SECONDS = 10.0  # a preview stops here and reports what it saw ("at least N")
# Event families whose default trigger follows every resource of the kind, one bucket each, and
# the related resource it matches (P§5.12).
PER_RESOURCE = {"prefect.flow-run.": "flow", "prefect.work-queue.": "work-queue"}
DEFAULT_BODY = '{"event": "{{ event.event }}", "resource": "{{ event.resource.id }}"}'


def default_trigger(event: dict[str, Any]) -> dict[str, Any]:
    """Prefect's trigger for "Automate" on ``event``: its resource, its name, reactive,
    threshold 1; for flow-run and work-queue events every resource of the kind that is
    related to the same flow / work queue, one bucket per resource."""
    resource_id = event["resource"].get(RESOURCE_ID, "")
    trigger: dict[str, Any] = {
        "type": "event",
        "posture": "Reactive",
        "match": {RESOURCE_ID: resource_id},
        "match_related": {},
        "after": [],
        "expect": [event["event"]],
        "for_each": [],
        "threshold": 1,
        "within": 0,
    }
    for prefix, role in PER_RESOURCE.items():
        if not event["event"].startswith(prefix):
            continue
        for r in event.get("related") or []:
            if r.get(RESOURCE_ROLE) == role:
                kind = prefix.rstrip(".")
                trigger["match"] = {RESOURCE_ID: f"{kind}.*"}
                trigger["match_related"] = {RESOURCE_ROLE: role, RESOURCE_ID: r[RESOURCE_ID]}
                trigger["for_each"] = [RESOURCE_ID]
                break
    return trigger


def automate_routes(ctx: WebContext) -> list[Route]:
    async def automate(request: web.Request) -> web.StreamResponse:
        event_id = request.query.get("event", "")
        event: dict[str, Any] | None = None
        if event_id:
            if not UUID_TEXT.match(event_id):
                raise InvalidInput(f"event: {event_id!r} is not an event id")
            event = (await asyncio.to_thread(ctx.reader.get, event_id)).to_dict()
        if event is not None:
            trigger = default_trigger(event)
            name = f"{event_label(event['event'])} on {resource_name(event['resource'])}"
        else:
            trigger = default_trigger({"event": "", "resource": {}})
            trigger["expect"] = []
            name = "New automation"
        return ctx.pages.page(
            "automate.html",
            nav="automations",
            event=event,
            trigger=trigger,
            name=name[:200],
            match_json=orjson.dumps(trigger["match"], option=orjson.OPT_INDENT_2).decode(),
            match_related_json=orjson.dumps(
                trigger["match_related"], option=orjson.OPT_INDENT_2
            ).decode(),
            default_body=DEFAULT_BODY,
            can_admin=ctx.can_admin(request),
        )

    async def preview(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request)
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"body is not valid JSON: {exc}") from None
            automation = validate_automation(data)
            until = ctx.clock.now()
            since = until - PREVIEW_WINDOW
            deadline = time.monotonic() + PREVIEW_SECONDS
            firings, events, truncated = await asyncio.to_thread(
                ctx.automations.backtest,
                automation,
                since,
                until,
                stop=lambda: time.monotonic() > deadline,
            )
        except HeraldError as exc:
            return json_error(exc)
        return web.json_response(
            {
                "firings": len(firings),
                "events": events,
                "truncated": truncated,
                "stopped": time.monotonic() > deadline,
                "since": since.isoformat(),
                "until": until.isoformat(),
            }
        )

    return [
        Route("GET", "/automate", ctx.html_errors(automate), Scope.READ, ctx.error_page),
        Route("POST", "/automate/preview", preview, Scope.READ),
    ]
