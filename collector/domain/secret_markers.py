"""Secrets written into an automation: what counts as one, and the *public* form that keeps
them out of what readers see (docs/automations.md, "Secrets").

A webhook's ``Authorization`` header or a token in its URL is a secret. ``split`` replaces
every secret-bearing value with a marker ``[secret:<ref>]`` — that public form is what the
``automations`` table, the read APIs and the ``herald.automation.*`` events hold — and returns
the real values by ref, which the store keeps outside the database
(``collector.store.secret_vault``). ``resolve`` puts them back for the runtime. A marker sent
back in an update (a read-token export, edited) keeps the stored value.

Secret-bearing values (webhook actions only): every header value except those of a few
harmless headers (``Content-Type``, ``Accept``, …), the userinfo of the URL and every query
parameter value — unless the value is only template expressions (``{{ secrets.TOKEN }}``,
``Bearer {{ secrets.TOKEN }}``, ``{{ event.id }}``), which hold no secret themselves.

``scrub`` takes the values an action used out of what is recorded about its run (the
``action_runs`` row and the ``herald.automation.action.*`` event): the URL, the response
body, error messages. Pure functions over the automation's JSON; ``{{ secrets.NAME }}``, looked
up when an action runs, is ``collector.automations.secrets``.
"""

from __future__ import annotations

import json
import re
import secrets as _random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from collector.errors import InvalidAutomation

MARKER = re.compile(r"\[secret:([0-9a-f]{16})\]")
REDACTED = "[redacted]"
SAFE_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-encoding",
        "content-language",
        "content-type",
        "user-agent",
    }
)
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "bot", "digest", "apikey"})
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_QUOTE = re.compile(r"['\"]")
# Shorter values are not scrubbed out of recorded text: they would match everywhere.
MIN_SCRUB_LENGTH = 4

Vault = Mapping[str, str]


def new_ref() -> str:
    return _random.token_hex(8)


def marker(ref: str) -> str:
    return f"[secret:{ref}]"


def holds_secret(value: str) -> bool:
    """Whether a header/URL value carries secret material of its own: anything but template
    expressions (without string literals) and auth-scheme words."""
    if MARKER.fullmatch(value.strip()):
        return False  # already public
    for tag in _TAG.findall(value):
        if _QUOTE.search(tag):
            return True  # a literal inside an expression may be the secret
    words = _TAG.sub(" ", value).split()
    return any(w.lower() not in _AUTH_SCHEMES for w in words)


# --------------------------------------------------------------------------------------------
# Walking a webhook URL without touching its template expressions


def _shield(text: str) -> tuple[str, list[str]]:
    tags: list[str] = []

    def hide(m: re.Match[str]) -> str:
        tags.append(m.group(0))
        return f"\x00{len(tags) - 1}\x00"

    return _TAG.sub(hide, text), tags


def _unshield(text: str, tags: list[str]) -> str:
    return re.sub(r"\x00(\d+)\x00", lambda m: tags[int(m.group(1))], text)


def map_url_secrets(url: str, protect: Callable[[str], str]) -> str:
    """``url`` with ``protect`` applied to its userinfo and to each query parameter value
    that holds a secret (template expressions are left alone)."""
    shielded, tags = _shield(url)
    scheme, sep, rest = shielded.partition("://")
    if not sep:
        return url
    m = re.match(r"([^/?#]*)(.*)", rest, re.S)
    assert m is not None
    authority, tail = m.groups()
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        real = _unshield(userinfo, tags)
        if userinfo and holds_secret(real):
            authority = f"{protect(real)}@{host}"
    path, q, query_fragment = tail.partition("?")
    if q:
        query, hash_, fragment = query_fragment.partition("#")
        params = []
        for param in query.split("&"):
            key, eq, value = param.partition("=")
            real = _unshield(value, tags)
            if eq and value and holds_secret(real):
                value = protect(real)
            params.append(f"{key}{eq}{value}")
        tail = f"{path}?{'&'.join(params)}{hash_}{fragment}"
    return _unshield(f"{scheme}://{authority}{tail}", tags)


def _webhooks(body: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for field in ("actions", "actions_on_trigger", "actions_on_resolve"):
        for i, action in enumerate(body.get(field) or []):
            if isinstance(action, dict) and action.get("type") == "call-webhook":
                yield f"{field}[{i}]", action


# --------------------------------------------------------------------------------------------
# Public form <-> real values


def _map_secrets(body: Mapping[str, Any], protect: Callable[[str], str]) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(json.dumps(body))
    for _, action in _webhooks(public):
        action["url"] = map_url_secrets(str(action.get("url", "")), protect)
        headers = action.get("headers") or {}
        for name, value in list(headers.items()):
            if name.lower() not in SAFE_HEADERS and isinstance(value, str) and holds_secret(value):
                headers[name] = protect(value)
    return public


def split(
    body: Mapping[str, Any], reuse: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The public form of an automation's JSON and the secrets it holds (ref → value).
    ``reuse`` maps values to refs already stored, so an unchanged secret keeps its marker."""
    found: dict[str, str] = {}

    def protect(value: str) -> str:
        ref = reuse.get(value) or next((r for r, v in found.items() if v == value), None)
        ref = ref or new_ref()
        found[ref] = value
        return marker(ref)

    return _map_secrets(body, protect), found


def redact(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An automation's JSON with every secret-bearing value replaced by ``[redacted]``, and
    those values (for ``scrub``)."""
    found: list[str] = []

    def protect(value: str) -> str:
        found.append(value)
        return REDACTED

    return _map_secrets(body, protect), found


def refs_in(body: Mapping[str, Any]) -> set[str]:
    """The refs the markers in an automation's webhook actions point to."""
    refs: set[str] = set()
    for _, action in _webhooks(body):
        refs.update(MARKER.findall(str(action.get("url", ""))))
        for value in (action.get("headers") or {}).values():
            refs.update(MARKER.findall(str(value)))
    return refs


def resolve(body: Mapping[str, Any], vault: Vault, *, strict: bool = False) -> dict[str, Any]:
    """Put the real values back in place of the markers of an automation's webhook actions.
    ``strict``: a marker whose value is not stored is an ``InvalidAutomation`` naming the
    field (a request that sends a marker back); otherwise it is left as it is."""
    real: dict[str, Any] = json.loads(json.dumps(body))

    def put_back(where: str) -> Callable[[re.Match[str]], str]:
        def sub(m: re.Match[str]) -> str:
            value = vault.get(m.group(1))
            if value is not None:
                return value
            if strict:
                raise InvalidAutomation(
                    f"{where}: {m.group(0)} refers to a secret this server does not hold; "
                    "give the value itself"
                )
            return m.group(0)

        return sub

    for where, action in _webhooks(real):
        if isinstance(action.get("url"), str):
            action["url"] = MARKER.sub(put_back(f"{where}.url"), action["url"])
        headers = action.get("headers") or {}
        for name, value in list(headers.items()):
            if isinstance(value, str):
                headers[name] = MARKER.sub(put_back(f"{where}.headers.{name}"), value)
    return real


def redact_url(url: str) -> str:
    """A rendered URL as it may be recorded: userinfo and secret query values replaced."""
    return map_url_secrets(url, lambda _value: REDACTED)


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (JSON-like) with every occurrence of each secret replaced by
    ``[redacted]`` (longest first, so a secret that contains another goes whole)."""
    needles = sorted({s for s in secrets if len(s) >= MIN_SCRUB_LENGTH}, key=len, reverse=True)
    if not needles:
        return value
    pattern = re.compile("|".join(re.escape(n) for n in needles))

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(REDACTED, item)
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)


def secret_parts(value: str) -> list[str]:
    """A secret value and its parts worth scrubbing on their own (``Bearer abc`` → also
    ``abc``; ``user:pass`` → also ``pass``)."""
    parts = [value]
    parts += [w for w in value.split() if w.lower() not in _AUTH_SCHEMES]
    if ":" in value:
        parts += value.split(":")
    return [p for p in parts if p]
