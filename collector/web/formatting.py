"""How values look on a page: times (absolute and relative), resource names, event labels and
JSON as a collapsible tree. Pure functions, registered as Jinja2 filters (``FILTERS``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from markupsafe import Markup

RESOURCE_ID = "prefect.resource.id"
RESOURCE_NAME = "prefect.resource.name"
RESOURCE_ROLE = "prefect.resource.role"
# Objects and arrays deeper than this start folded; a big payload opens at a readable size.
OPEN_DEPTH = 2
OPEN_MAX_ITEMS = 50


def as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | str) -> str:
    """ISO 8601 in UTC with milliseconds (what ``<time datetime>`` carries)."""
    return as_datetime(value).astimezone(UTC).isoformat(timespec="milliseconds")


def absolute(value: datetime | str) -> str:
    """``2026-12-03 06:45:12.345 UTC``."""
    return as_datetime(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def short_time(value: datetime | str) -> str:
    """``12-03 06:45 UTC`` (an axis label)."""
    return as_datetime(value).astimezone(UTC).strftime("%m-%d %H:%M:%S UTC")


def relative(value: datetime | str, now: datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (``in 4 min`` for the future)."""
    now = now or datetime.now(UTC)
    seconds = (now - as_datetime(value)).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if ahead else f"{text} ago"


def resource_name(resource: Mapping[str, str]) -> str:
    """A resource's name label, else its id."""
    return resource.get(RESOURCE_NAME) or resource.get(RESOURCE_ID, "")


def event_label(name: str) -> str:
    """Prefect's label for an event name: prefix dropped, words capitalised
    (``prefect.flow-run.Completed`` → ``Flow Run Completed``)."""
    for prefix in ("prefect-cloud.", "prefect."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    words = name.replace(".", " ").replace("_", " ").replace("-", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _scalar(value: Any) -> Markup:
    if value is None:
        return Markup('<span class="b">null</span>')
    if isinstance(value, bool):
        return Markup('<span class="b">{}</span>').format("true" if value else "false")
    if isinstance(value, int | float):
        return Markup('<span class="n">{}</span>').format(orjson.dumps(value).decode())
    return Markup('<span class="s">{}</span>').format(orjson.dumps(value).decode())


def _tree(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, dict):
        items: list[tuple[Markup, Any]] = [
            (Markup('<span class="k">{}</span>: ').format(orjson.dumps(k).decode()), v)
            for k, v in value.items()
        ]
        opening, closing = "{", "}"
    elif isinstance(value, list):
        items = [(Markup(""), v) for v in value]
        opening, closing = "[", "]"
    else:
        out.append(_scalar(value))
        return
    if not items:
        out.append(opening + closing)
        return
    is_open = depth < OPEN_DEPTH and len(items) <= OPEN_MAX_ITEMS
    out.append(
        Markup('<details{}><summary>{} <span class="muted">{} {}</span></summary>').format(
            Markup(" open") if is_open else "",
            opening,
            len(items),
            "keys" if opening == "{" else "items",
        )
    )
    for key, child in items:
        out.append('<div class="line">')
        out.append(key)
        _tree(child, depth + 1, out)
        out.append("</div>")
    out.append(Markup("</details>{}").format(closing))


def json_html(value: Any) -> Markup:
    """``value`` as a tree of ``<details>`` elements (folds without script); every key and
    string is escaped."""
    out: list[str] = []
    _tree(value, 0, out)
    return Markup('<div class="json">{}</div>').format(Markup("".join(out)))


def row_view(event: Mapping[str, Any], link: Callable[..., str], now: datetime) -> dict[str, Any]:
    """A feed row with every text and link computed here, once (the template only places
    them): the page lists 50 and the live feed renders many more."""
    resource = event.get("resource") or {}
    rid = resource.get(RESOURCE_ID, "")
    related = []
    for r in event.get("related") or ():
        rel_id = r.get(RESOURCE_ID, "")
        role = r.get(RESOURCE_ROLE, "")
        related.append(
            {
                "id": rel_id,
                "role": role,
                "name": resource_name(r),
                "url": link(related=rel_id, role=role),
            }
        )
    occurred = as_datetime(event["occurred"])
    return {
        "id": str(event["id"]),
        "event": event["event"],
        "label": event_label(event["event"]),
        "resource_id": rid,
        "resource_name": resource_name(resource),
        "resource_url": link(resource=rid),
        "related": related,
        "iso": iso(occurred),
        "absolute": absolute(occurred),
        "relative": relative(occurred, now),
    }


FILTERS: dict[str, Callable[..., Any]] = {
    "iso": iso,
    "absolute": absolute,
    "short_time": short_time,
    "relative": relative,
    "resource_name": resource_name,
    "event_label": event_label,
    "pretty_json": pretty_json,
    "json_html": json_html,
}
