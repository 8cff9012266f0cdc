"""``GET /automations`` (every automation: enabled state, trigger, last firing, pause / resume /
delete) and ``GET /automations/{id}`` (its trigger as JSON and the history of its firings with
their action runs, cancelled and skipped ones included). Reads go through the
``AutomationService``; changes are made by the page's script through the automations API."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import orjson
from aiohttp import web

from collector.config import Scope
from collector.domain.triggers import describe_trigger
from collector.errors import NotFound
from collector.server.http_server import Route
from collector.web.context import WebContext
from collector.web.formatting import pretty_json

HISTORY_LIMIT = 100


def action_text(action: dict[str, Any]) -> str:
    """An action as ``prefect automation ls`` names it ("Call webhook", …) with its target."""
    kind = str(action.get("type", ""))
    text = kind.replace("-", " ").capitalize()
    if kind == "call-webhook":
        return f"{text} {action.get('method', 'POST')} {action.get('url', '')}"
    if kind == "emit-event":
        return f"{text} {action.get('event', '')}"
    return text


def automation_routes(ctx: WebContext) -> list[Route]:
    service = ctx.automations

    async def list_page(request: web.Request) -> web.StreamResponse:
        stored = sorted(await service.list_automations(), key=lambda s: s.automation.name.lower())
        lasts = await asyncio.gather(*(service.history(s.automation.id, 1) for s in stored))
        items = []
        for s, last in zip(stored, lasts, strict=True):
            data = s.to_dict()
            items.append(
                {
                    "id": str(s.automation.id),
                    "name": s.automation.name,
                    "description": s.automation.description,
                    "enabled": s.automation.enabled,
                    "trigger": describe_trigger(s.automation.trigger),
                    "actions": [action_text(a) for a in data.get("actions", [])],
                    "last": last[0] if last else None,
                }
            )
        return ctx.pages.page(
            "automations.html",
            nav="automations",
            automations=items,
            can_admin=ctx.can_admin(request),
        )

    async def detail_page(request: web.Request) -> web.StreamResponse:
        try:
            automation_id = UUID(request.match_info["id"])
        except ValueError:
            raise NotFound(f"no automation {request.match_info['id']!r}") from None
        stored = await service.read(automation_id)
        history, counts = await asyncio.gather(
            service.history(automation_id, HISTORY_LIMIT), service.run_counts(automation_id)
        )
        data = stored.to_dict()
        for firing in history:
            for run in firing["action_runs"]:
                detail = run.get("detail")
                if detail is not None and not isinstance(detail, str):
                    run["detail"] = orjson.dumps(detail).decode()
        return ctx.pages.page(
            "automation.html",
            nav="automations",
            a=data,
            trigger_text=describe_trigger(stored.automation.trigger),
            trigger_json=pretty_json(data["trigger"]),
            automation_json=pretty_json(data),
            actions=[action_text(a) for a in data.get("actions", [])],
            history=history,
            run_counts=counts,
            history_limit=HISTORY_LIMIT,
            can_admin=ctx.can_admin(request),
        )

    return [
        Route("GET", "/automations", ctx.html_errors(list_page), Scope.READ, ctx.error_page),
        Route("GET", "/automations/{id}", ctx.html_errors(detail_page), Scope.READ, ctx.error_page),
    ]
