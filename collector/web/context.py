"""``WebContext``: what every page handler of the web UI is given (built once in ``app.py``),
and the error pages: a missing token sends the browser to the sign-in page, other errors render
``error.html`` with the status ``collector.server.status`` maps them to."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from collector.automations.service import AutomationService
from collector.clock import Clock
from collector.config import Scope
from collector.domain.event_store import EventReads
from collector.errors import HeraldError, Unauthenticated
from collector.pipeline.tail import TailHub
from collector.server.auth import Authenticator
from collector.server.http_server import Handler, request_authorization
from collector.server.status import classify
from collector.web.live import LiveStreams
from collector.web.rendering import PageRenderer


@dataclass
class WebContext:
    reader: EventReads
    tail: TailHub
    automations: AutomationService
    auth: Authenticator
    clock: Clock
    pages: PageRenderer
    live: LiveStreams = field(default_factory=LiveStreams)

    def can_admin(self, request: web.Request) -> bool:
        """Does the request's token (header or cookie) carry the admin scope?"""
        if not self.auth.enabled:
            return True
        try:
            return Scope.ADMIN in self.auth.scopes(request_authorization(request))
        except HeraldError:
            return False

    def html_errors(self, handler: Handler) -> Handler:
        """``handler`` with Herald's errors answered as pages (a 404 page for ``NotFound``)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except HeraldError as exc:
                return self.error_page(request, exc)

        guarded.__name__ = handler.__name__
        return guarded

    def error_page(self, request: web.Request, exc: BaseException) -> web.StreamResponse:
        """A page for an error raised before or inside a handler."""
        if isinstance(exc, Unauthenticated) and request.method in ("GET", "HEAD"):
            location = f"/login?next={quote(request.path_qs, safe='')}"
            return web.Response(status=303, headers={"Location": location})
        _, status, message = classify(exc)
        return self.pages.page("error.html", status=status, message=message, status_code=status)
