"""Rules for what a call-webhook action may call and what of it is recorded: the
``automations.webhook_allow_hosts`` allowlist (host globs with optional ports), response
headers with credentials redacted, and the forms in which URL credentials may come back in a
response (to scrub them from the run's record).
"""

from __future__ import annotations

import base64
import fnmatch
from urllib.parse import unquote

import httpx

_REDACTED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


def redact_headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers as recorded: credentials and cookies replaced."""
    return {k: ("[redacted]" if k.lower() in _REDACTED_HEADERS else v) for k, v in headers.items()}


def host_port(url: str) -> tuple[str, int | None]:
    """The URL's host (lower case, no brackets) and port (the scheme's default if none)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "", None
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.host.lower().strip("[]"), port


def _pattern(entry: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]:port``, ``*.example.com`` → (host glob, port glob)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":") or "*"
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port or "*"
    return entry, "*"


def userinfo_forms(url: str) -> list[str]:
    """URL credentials as they may come back in a response: plain and as Basic auth."""
    try:
        userinfo = unquote(httpx.URL(url).userinfo.decode())
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeDecodeError):
        return []
    if not userinfo:
        return []
    return [userinfo, base64.b64encode(userinfo.encode()).decode()]


def webhook_host_allowed(url: str, allowed: list[str]) -> bool:
    """Whether a rendered webhook URL's host (and port) matches ``allowed`` (empty: any)."""
    if not allowed:
        return True
    host, port = host_port(url)
    if not host:
        return False
    for entry in allowed:
        host_glob, port_glob = _pattern(entry)
        if fnmatch.fnmatchcase(host, host_glob) and fnmatch.fnmatchcase(str(port), port_glob):
            return True
    return False
