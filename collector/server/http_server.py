"""The HTTP server (aiohttp, on the same event loop as gRPC): routing, auth per route, body
reading with the size limit applied after decompression. Handlers live in their own modules."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from collector.config import Scope
from collector.errors import HeraldError, InvalidInput, PayloadTooLarge, PermissionDenied
from collector.server.auth import Authenticator
from collector.server.status import classify, retry_after_header

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[[web.Request, BaseException], web.StreamResponse]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: Scope | None  # None: no token needed (the web UI's sign-in page and static files)
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
    """The whole request body, inflated if ``Content-Encoding: gzip`` (or ``deflate``).

    Reads until the body ends (``Content-Length`` or chunked framing), however many reads
    that takes: a body arrives over TCP in pieces, and one read returns only what has arrived
    so far. ``max_receive_bytes`` applies to the body as sent and, when compressed, to its
    inflated size, checked as the bytes arrive so an oversized body or a small "zip bomb"
    never sits in memory whole. Raises ``PayloadTooLarge`` (413) beyond the limit and
    ``InvalidInput`` (400) for a body that cannot be decoded.
    """
    limit = request.app[MAX_BYTES_KEY]
    encoding = request.headers.get("Content-Encoding", "identity").lower().strip()
    if encoding in ("", "identity"):
        inflater = None
    elif encoding in ("gzip", "deflate"):
        inflater = _Inflater(encoding, limit)
    else:
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or identity)")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
            if inflater is None:
                parts.append(chunk)
            else:
                inflater.feed(chunk)
    except (ClientPayloadError, HttpProcessingError, ConnectionError) as exc:
        # Broken framing, or the client went away mid-body (aiohttp: "Connection lost"). The
        # request is refused as a client error: nothing is stored, no traceback is logged.
        raise InvalidInput(f"the request body could not be read: {exc}") from None
    if inflater is not None:
        return inflater.finish()
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Inflater:
    """Streaming gzip/deflate decoding with a cap on the inflated size.

    A gzip body may hold several members one after another (RFC 1952 §2.2; ``cat a.gz b.gz``
    and some clients' streaming writers make them): every member is decoded. Bytes after the
    last member that are not another member, and a body that ends before its member's
    trailer (CRC and size), are refused rather than silently ignored.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self._gzip = encoding == "gzip"
        self._encoding = encoding
        self._limit = limit
        self._out: list[bytes] = []
        self._size = 0
        self._members = 0
        self._fed = False  # any byte given: an empty body inflates to an empty body
        self._decoder = self._new_member()

    def _new_member(self) -> Any:
        self._members += 1
        # wbits: 16 + MAX_WBITS = one gzip member; MAX_WBITS = one zlib stream.
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        self._fed = self._fed or bool(data)
        while data:
            if self._decoder.eof:
                if not self._gzip:
                    raise InvalidInput("deflate body has data after the end of its stream")
                self._decoder = self._new_member()
            try:
                # max_length caps what one call may inflate (never 0: that means unlimited).
                out = self._decoder.decompress(data, self._limit - self._size + 1)
            except zlib.error as exc:
                if self._members > 1:
                    raise InvalidInput(
                        "gzip body has data after its last member that is not another gzip member"
                    ) from None
                raise InvalidInput(f"body is not valid {self._encoding}: {exc}") from None
            self._size += len(out)
            if self._size > self._limit:
                raise PayloadTooLarge(f"decompressed body is over the {self._limit}-byte limit")
            self._out.append(out)
            data = self._decoder.unused_data if self._decoder.eof else self._decoder.unconsumed_tail

    def finish(self) -> bytes:
        """The inflated body; raises ``InvalidInput`` if the last member is incomplete."""
        if self._fed and not self._decoder.eof:
            raise InvalidInput(f"{self._encoding} body is truncated (it ends mid-stream)")
        return b"".join(self._out)


def build_app(routes: list[Route], auth: Authenticator, max_bytes: int) -> web.Application:
    """An aiohttp application with every route's scope checked before its handler runs."""
    # client_max_size only guards request.read()/post(), which no handler calls: read_body
    # streams the body and enforces the limit itself (after inflation, with a Status body
    # for OTLP routes), so aiohttp never answers its own plain-text 413.
    app = web.Application(client_max_size=max_bytes + 1)
    app[AUTH_KEY] = auth
    app[MAX_BYTES_KEY] = max_bytes
    for route in routes:
        app.router.add_route(route.method, route.path, _guarded(route, auth))
    return app


# The web UI keeps the token it was given in this cookie (HttpOnly, SameSite=Strict).
TOKEN_COOKIE = "herald_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# A state change authenticated by the cookie must carry this header too: a page of another site
# cannot set it (not without a CORS preflight, which Herald never grants).
UI_REQUEST_HEADER = "X-Herald-Request"


def request_authorization(request: web.Request) -> str | None:
    """The request's credentials as an ``Authorization`` value: the header, else the web UI's
    token cookie (``PermissionDenied`` for a cookie on a state change without the UI's header)."""
    header = request.headers.get("Authorization")
    if header:
        return header
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        return None
    if request.method not in SAFE_METHODS and UI_REQUEST_HEADER not in request.headers:
        raise PermissionDenied(f"a change made with the sign-in cookie needs {UI_REQUEST_HEADER}")
    return f"Bearer {token}"


def check_same_origin(request: web.Request) -> None:
    """Refuse a state-changing request a browser sent from another site (CSRF): browsers name
    the page's origin in ``Origin`` on every cross-origin POST/PUT/PATCH/DELETE (and report
    ``Sec-Fetch-Site``); curl, SDKs and other non-browser clients send neither."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise PermissionDenied(f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.host:
        raise PermissionDenied(f"cross-site request refused (Origin: {origin})")


def _guarded(route: Route, auth: Authenticator) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            # Ingest stays open to browsers' exporters; reads and admin changes do not.
            if route.scope is not Scope.INGEST:
                check_same_origin(request)
            if route.scope is not None and auth.enabled:
                auth.check(request_authorization(request), route.scope)
        except HeraldError as exc:
            return route.render_error(request, exc) if route.render_error else json_error(exc)
        return await route.handler(request)

    handler.__name__ = route.handler.__name__
    return handler
