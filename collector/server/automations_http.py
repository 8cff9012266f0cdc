"""Herald's automations over HTTP in Prefect's REST shapes (P§6.2), for the web UI, curl and
Prefect's own client (``prefect automation …``):

    POST   /api/automations/                  create → 201 with the automation (and its id)
    POST   /api/automations/filter            list (sort, limit, offset, id/name/created/tags)
    POST   /api/automations/count             how many
    GET    /api/automations/{id}              one → 200, or 404
    PUT    /api/automations/{id}              replace → 204
    PATCH  /api/automations/{id}              ``{"enabled": bool}`` (pause/resume) → 204
    DELETE /api/automations/{id}              → 204, or 404
    GET    /api/automations/related-to/{rid}  owned by that resource
    DELETE /api/automations/owned-by/{rid}    delete those → 202

Each handler is decode → ``AutomationService`` (the same calls the gRPC API makes) → encode;
reads need the ``read`` scope, changes ``admin`` (checked by ``http_server``). Errors are
answered once, by ``json_error``: an automation that does not validate is 422 naming the
field (an action type Herald lacks is named as such), an unknown id 404. Reads show secrets as
markers; ``?reveal_secrets=true`` shows the values to an admin token. Prefect's client is
shown Herald's actions in its own vocabulary, and what it PUTs back is mapped to the stored
actions (``prefect_action_restore``), so its ``update`` loses nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import orjson
from aiohttp import web

from collector.automations.service import AutomationService
from collector.config import Scope
from collector.domain.automation_records import StoredAutomation
from collector.errors import HeraldError, InvalidAutomation, InvalidInput
from collector.mapping.prefect_action_restore import restore_herald_actions
from collector.mapping.prefect_automations import (
    is_prefect_client,
    parse_query,
    prefect_client_view,
    select,
)
from collector.server.auth import Authenticator
from collector.server.http_server import Route, json_error, read_body, request_authorization

PREFIX = "/api/automations"
Body = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _json(request: web.Request, *, required: bool) -> Any:
    body = await read_body(request)
    if not body.strip():
        if required:
            raise InvalidInput("the request needs a JSON body")
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None


def _id(request: web.Request) -> UUID:
    value = request.match_info["id"]
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a valid automation id") from None


def _reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def automations_routes(service: AutomationService, auth: Authenticator) -> list[Route]:
    """The routes above, served by ``service``; ``auth`` for ``reveal_secrets``."""

    def shown(request: web.Request, found: list[StoredAutomation]) -> list[dict[str, Any]]:
        reveal = request.query.get("reveal_secrets", "").lower() in ("1", "true", "yes")
        if reveal:
            auth.check(request_authorization(request), Scope.ADMIN)
        out = [s.to_dict(reveal=reveal) for s in found]
        if is_prefect_client(request.headers.get("User-Agent")):
            out = [prefect_client_view(a) for a in out]
        return out

    def handled(work: Body) -> Body:
        # The one place this API turns a Herald error into its JSON answer.
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await work(request)
            except HeraldError as exc:
                return json_error(exc)

        handler.__name__ = work.__name__
        return handler

    async def create(request: web.Request) -> web.StreamResponse:
        data = await _json(request, required=True)
        # Actions shown to Prefect's client come back with ``herald_type``: restored.
        data = restore_herald_actions(data, None, from_prefect_client=False)
        stored = await service.create(data)
        return _reply(shown(request, [stored])[0], status=201)

    async def filter_automations(request: web.Request) -> web.StreamResponse:
        data = await _json(request, required=False)
        if not isinstance(data, dict):
            raise InvalidInput("body must be a JSON object")
        query = parse_query(data)
        return _reply(shown(request, select(await service.list_automations(), query)))

    async def count(request: web.Request) -> web.StreamResponse:
        data = await _json(request, required=False)
        if not isinstance(data, dict):
            raise InvalidInput("body must be a JSON object")
        query = parse_query({"automations": data.get("automations")})
        return _reply(len(select(await service.list_automations(), query)))

    async def read(request: web.Request) -> web.StreamResponse:
        return _reply(shown(request, [await service.read(_id(request))])[0])

    async def replace(request: web.Request) -> web.StreamResponse:
        automation_id = _id(request)
        data = await _json(request, required=True)
        # Prefect's client PUTs back what it read, minus the Herald fields its models drop:
        # the stored actions fill them in, or the PUT is refused (prefect_action_restore).
        from_prefect = is_prefect_client(request.headers.get("User-Agent"))
        current = (await service.read(automation_id)).to_dict() if from_prefect else None
        data = restore_herald_actions(data, current, from_prefect_client=from_prefect)
        await service.update(automation_id, data)
        return web.Response(status=204)

    async def patch(request: web.Request) -> web.StreamResponse:
        automation_id = _id(request)
        data = await _json(request, required=True)
        # Prefect's AutomationPartialUpdate: exactly ``enabled`` (unknown keys are refused).
        if not isinstance(data, dict):
            raise InvalidAutomation('body must be {"enabled": true|false}')
        extra = sorted(set(data) - {"enabled"})
        if extra:
            raise InvalidAutomation(
                f"{extra[0]}: unknown field (PATCH changes only enabled; PUT replaces)"
            )
        enabled = data.get("enabled")
        if not isinstance(enabled, bool):
            raise InvalidAutomation("enabled: required (true or false)")
        await service.set_enabled(automation_id, enabled)
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.StreamResponse:
        await service.delete(_id(request))
        return web.Response(status=204)

    async def related_to(request: web.Request) -> web.StreamResponse:
        resource_id = request.match_info["resource_id"]
        found = await service.list_automations()
        return _reply(shown(request, [s for s in found if _owned_by(s, resource_id)]))

    async def delete_owned_by(request: web.Request) -> web.StreamResponse:
        resource_id = request.match_info["resource_id"]
        for stored in await service.list_automations():
            if _owned_by(stored, resource_id):
                await service.delete(stored.automation.id)
        return web.Response(status=202)

    item = f"{PREFIX}/{{id}}"
    return [
        Route("POST", f"{PREFIX}/", handled(create), Scope.ADMIN),
        Route("POST", PREFIX, handled(create), Scope.ADMIN),
        Route("POST", f"{PREFIX}/filter", handled(filter_automations), Scope.READ),
        Route("POST", f"{PREFIX}/count", handled(count), Scope.READ),
        Route("GET", f"{PREFIX}/related-to/{{resource_id}}", handled(related_to), Scope.READ),
        Route(
            "DELETE", f"{PREFIX}/owned-by/{{resource_id}}", handled(delete_owned_by), Scope.ADMIN
        ),
        Route("GET", item, handled(read), Scope.READ),
        Route("PUT", item, handled(replace), Scope.ADMIN),
        Route("PATCH", item, handled(patch), Scope.ADMIN),
        Route("DELETE", item, handled(delete), Scope.ADMIN),
    ]


def _owned_by(stored: StoredAutomation, resource_id: str) -> bool:
    return stored.automation.owner_resource == resource_id
