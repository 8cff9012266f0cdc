"""Every route of the web UI, for ``app.py``: the feed (``/``, ``/live``), events
(``/events/{id}``), Automate (``/automate``), automations (``/automations``), traces
(``/traces/{trace_id}``), signing in and the static files. A new page: a module here with a
``*_routes(ctx)`` function, its template extending ``base.html``, and one line below."""

from __future__ import annotations

from collector.server.http_server import Route
from collector.web.automate_page import automate_routes
from collector.web.automation_pages import automation_routes
from collector.web.context import WebContext
from collector.web.event_page import event_routes
from collector.web.feed_page import feed_routes
from collector.web.sign_in import sign_in_routes
from collector.web.trace_page import trace_routes


def web_routes(ctx: WebContext) -> list[Route]:
    return [
        *feed_routes(ctx),
        *event_routes(ctx),
        *automate_routes(ctx),
        *automation_routes(ctx),
        *sign_in_routes(ctx),
        *trace_routes(ctx),
    ]
