"""The common filter flags of `herald events ls|tail|count` → Prefect EventFilter JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from cli._parsing import parse_json, parse_labels, parse_time
from collector.domain.events import format_time
from collector.errors import InvalidInput

EventOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        "-e",
        metavar="<name>",
        help="event name, or a prefix ending in * (repeatable, OR)",
    ),
]
ResourceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--resource",
        "-r",
        metavar="<id>",
        help="resource id, or an id prefix ending in * (repeatable)",
    ),
]
RelatedOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--related",
        metavar="<role=id>",
        help="ROLE=ID: a related resource in that role (repeatable, AND)",
    ),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        "-l",
        metavar="<k=v>",
        help="resource label k=v; globs * ? and !negation (repeatable)",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="<time>", help="15m, 2h, 7d or an ISO time (default: 180 days)"
    ),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", metavar="<time>", help="15m ago, or an ISO time")
]
TextOpt = Annotated[
    str | None,
    typer.Option(
        "--text",
        "-t",
        metavar="<query>",
        help='text search: words OR, -exclude, +require, "phrase"',
    ),
]
FilterJsonOpt = Annotated[
    str | None,
    typer.Option("--filter-json", metavar="<json>", help="a whole Prefect EventFilter as JSON"),
]


def build_filter(
    events: list[str] | None = None,
    resources: list[str] | None = None,
    related: list[str] | None = None,
    labels: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    filter_json: str | None = None,
    order: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Flags win over the same parts of ``--filter-json``; the rest of it is kept."""
    data: dict[str, Any] = parse_json(filter_json, "--filter-json", dict) or {}
    now = now or datetime.now(UTC)
    if events:
        prefixes = [e[:-1] for e in events if e.endswith("*")]
        names = [e for e in events if not e.endswith("*")]
        if prefixes and names:
            raise InvalidInput("--event: give either names or prefixes (ending in *), not both")
        data["event"] = {"prefix": prefixes} if prefixes else {"name": names}
    if resources or labels:
        spec: dict[str, Any] = dict(data.get("resource") or {})
        if resources:
            prefixes = [r[:-1] for r in resources if r.endswith("*")]
            ids = [r for r in resources if not r.endswith("*")]
            if prefixes:
                spec["id_prefix"] = prefixes
            if ids:
                spec["id"] = ids
        if labels:
            merged: dict[str, list[str]] = {}
            for pair in labels:
                key, value = next(iter(parse_labels([pair], "--label").items()))
                merged.setdefault(key, []).append(value)
            spec["labels"] = merged
        data["resource"] = spec
    if related:
        items = []
        for pair in related:
            role, sep, rid = pair.partition("=")
            if not sep or not role or not rid:
                raise InvalidInput(f"--related: expected ROLE=ID, got {pair!r}")
            items.append({"role": [role], "id": [rid]})
        data["related"] = items
    if since or until:
        occurred = dict(data.get("occurred") or {})
        if since:
            occurred["since"] = format_time(parse_time(since, "--since", now))
        if until:
            occurred["until"] = format_time(parse_time(until, "--until", now))
        data["occurred"] = occurred
    if text:
        data["text"] = {"query": text}
    if order:
        data["order"] = order.upper()
    return data


def describe(filter: dict[str, Any]) -> str:
    return json.dumps(filter, separators=(",", ":"))
