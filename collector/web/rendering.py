"""``PageRenderer``: Jinja2 pages from ``collector/web/templates`` and the static files of
``collector/web/static``, with the security headers every page gets.

The environment is sandboxed and autoescaped: templates see only what a handler passes them, and
every value is HTML-escaped unless a template says otherwise (only for HTML the server built
itself, e.g. ``json_html``). Pages carry a Content-Security-Policy without ``unsafe-inline``:
scripts and styles come only from ``/static/``, so an event's text can never run as script.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from jinja2 import PackageLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from collector.web.formatting import FILTERS

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str  # a digest of the body: the URL changes when the file does


def load_static() -> dict[str, StaticFile]:
    """Every file of ``collector/web/static`` (read once: they are small)."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files("collector.web").joinpath("static").iterdir():
        if not entry.is_file():
            continue
        body = entry.read_bytes()
        kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
            kind += "; charset=utf-8"
        files[entry.name] = StaticFile(body, kind, hashlib.sha256(body).hexdigest()[:12])
    return files


class PageRenderer:
    """Renders pages; one per server (the environment caches compiled templates)."""

    def __init__(self, *, auth_enabled: bool) -> None:
        self.auth_enabled = auth_enabled
        self.static_files = load_static()
        self._env = SandboxedEnvironment(
            loader=PackageLoader("collector.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(FILTERS)
        self._env.globals["static"] = self.static_url

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static_files[name].version}"

    def render(self, template: str, *, nav: str = "", **context: Any) -> str:
        return self._env.get_template(template).render(
            nav=nav, auth_enabled=self.auth_enabled, **context
        )

    def page(
        self, template: str, *, status: int = 200, nav: str = "", **context: Any
    ) -> web.Response:
        """A rendered page as an HTML response with the security headers."""
        return web.Response(
            text=self.render(template, nav=nav, **context),
            status=status,
            content_type="text/html",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    def fragment(self, template: str, **context: Any) -> str:
        """A template rendered on its own (rows the live feed sends)."""
        return self._env.get_template(template).render(auth_enabled=self.auth_enabled, **context)

    def static_response(self, name: str) -> web.Response:
        found = self.static_files.get(name)
        if found is None:
            raise web.HTTPNotFound(text="no such file")
        return web.Response(
            body=found.body,
            headers={
                "Content-Type": found.content_type,
                "Cache-Control": "public, max-age=86400, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )
