"""The HTTP server (aiohttp, on the same event loop as gRPC): routing, auth per route, body
reading with the size limit applied after decompression. Handlers live in their own modules."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from collector.config import Scope
from collector.errors import HeraldError, InvalidInput, PayloadTooLarge
from collector.server.auth import Authenticator
from collector.server.status import classify, retry_after_header

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[[web.Request, BaseException], web.StreamResponse]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: Scope
    # How errors raised before the handler runs (auth) are answered; None = ``json_error``.
    # OTLP routes need ``google.rpc.Status`` bodies instead (otlp.md §1.5).
    render_error: ErrorRenderer | None = None


AUTH_KEY = web.AppKey("auth", Authenticator)
MAX_BYTES_KEY = web.AppKey("max_bytes", int)


def json_error(exc: BaseException) -> web.Response:
    """A JSON error body (``{"detail": …}``, as Prefect's API answers) with the mapped status."""
    _, status, message = classify(exc)
    return web.json_response({"detail": message}, status=status, headers=retry_after_header(exc))


async def read_body(request: web.Request) -> bytes:
    """The request body, gunzipped if ``Content-Encoding: gzip``, within the size limit."""
    limit = request.app[MAX_BYTES_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
    encoding = request.headers.get("Content-Encoding", "identity").lower().strip()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "deflate"):
        # Decompress with a cap so a small "zip bomb" cannot blow up memory.
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(raw, limit + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidInput(f"body is not valid {encoding}: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body is over the {limit}-byte limit")
        return out
    raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or identity)")


def build_app(routes: list[Route], auth: Authenticator, max_bytes: int) -> web.Application:
    """An aiohttp application with every route's scope checked before its handler runs."""
    # client_max_size is a backstop; read_body enforces the real limit after decompression.
    app = web.Application(client_max_size=max_bytes + 1)
    app[AUTH_KEY] = auth
    app[MAX_BYTES_KEY] = max_bytes
    for route in routes:
        app.router.add_route(route.method, route.path, _guarded(route, auth))
    return app


def _guarded(route: Route, auth: Authenticator) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            auth.check(request.headers.get("Authorization"), route.scope)
        except HeraldError as exc:
            return route.render_error(request, exc) if route.render_error else json_error(exc)
        return await route.handler(request)

    handler.__name__ = route.handler.__name__
    return handler
