"""Native HTTP ingest: ``POST /api/events`` (a JSON list of Prefect-shaped events → 204)."""

from __future__ import annotations

from aiohttp import web

from collector.config import Scope
from collector.errors import HeraldError
from collector.pipeline.ingest import NativeIngest
from collector.server.http_server import Route, json_error, read_body


def native_routes(ingest: NativeIngest) -> list[Route]:
    async def post_events(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request)
            _, errors = await ingest.emit_json(body)
        except HeraldError as exc:
            return json_error(exc)
        if errors:
            # The valid events are committed; say which ones were not (Prefect answers 422).
            return web.json_response(
                {
                    "detail": f"{len(errors)} event(s) rejected; the others were stored",
                    "errors": [{"index": i, "message": m} for i, m in errors],
                },
                status=422,
            )
        return web.Response(status=204)

    return [Route("POST", "/api/events", post_events, Scope.INGEST)]
