"""The feed page's URL: every filter is a query parameter, so a link shares the view and the
back button works. ``FeedQuery.parse`` reads them, ``to_filter`` turns them into Prefect's
``EventFilter`` JSON (what the API and the reader take), ``url`` writes them back with changes.

Parameters: ``range`` (a preset: 15m 1h 6h 24h 7d 30d) or ``since``/``until`` (ISO 8601; without
an offset: UTC); ``event`` (names, comma-separated; a trailing ``*`` makes a prefix); ``resource``
(a primary resource id, trailing ``*`` = prefix); ``label`` (repeatable ``key=value``, values are
globs); ``related`` and ``role`` (a related resource id — a glob — and its role); ``q`` (text
search); ``page`` (a keyset page token of the reader); ``live`` (1: live mode on load).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from collector.errors import InvalidFilter

PRESETS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
MAX_PARAM_CHARS = 2000
# Histogram bucket sizes (seconds) to pick from: the smallest giving at most MAX_BARS bars.
NICE_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800, 2592000,
)  # fmt: skip
MAX_BARS = 90


def parse_time(text: str, what: str) -> datetime:
    """ISO 8601 (``datetime-local`` inputs too: no offset means UTC); ``InvalidFilter`` else."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidFilter(f"{what}: {text!r} is not a date and time (ISO 8601)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class FeedQuery:
    range: str = ""
    since: str = ""
    until: str = ""
    event: str = ""
    resource: str = ""
    labels: tuple[str, ...] = ()
    related: str = ""
    role: str = ""
    q: str = ""
    page: str = ""
    live: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str] | Any) -> FeedQuery:
        """From a request's query (aiohttp's MultiDict: ``label`` may repeat)."""

        def one(name: str) -> str:
            value = str(query.get(name, "") or "")
            if len(value) > MAX_PARAM_CHARS:
                raise InvalidFilter(f"{name}: longer than {MAX_PARAM_CHARS} characters")
            return value.strip()

        getall = getattr(query, "getall", None)
        labels = tuple(v.strip() for v in (getall("label", []) if getall else []) if v.strip())
        found = cls(
            range=one("range"),
            since=one("since"),
            until=one("until"),
            event=one("event"),
            resource=one("resource"),
            labels=labels,
            related=one("related"),
            role=one("role"),
            q=one("q"),
            page=one("page"),
            live=one("live") in ("1", "true", "on"),
        )
        if found.range and found.range not in PRESETS:
            raise InvalidFilter(f"range: one of {', '.join(PRESETS)}, got {found.range!r}")
        return found

    # -- time range -------------------------------------------------------------------------

    @property
    def custom(self) -> bool:
        return bool(self.since or self.until) and not self.range

    @property
    def preset(self) -> str:
        return "" if self.custom else (self.range or DEFAULT_RANGE)

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The selected range as (since, until), both UTC."""
        if not self.custom:
            return now - PRESETS[self.preset], now
        until = parse_time(self.until, "until") if self.until else now
        since = parse_time(self.since, "since") if self.since else until - PRESETS[DEFAULT_RANGE]
        if since >= until:
            raise InvalidFilter("since: must be before until")
        return since, until

    # -- the filter -------------------------------------------------------------------------

    def to_filter(self, now: datetime, *, live: bool = False) -> dict[str, Any]:
        """Prefect's ``EventFilter`` JSON. ``live``: no time bounds (the live tail follows
        what is committed from now on, whatever the range shows)."""
        out: dict[str, Any] = {"order": "DESC"}
        if live:
            out["occurred"] = {"since": None, "until": None}
        else:
            since, until = self.window(now)
            out["occurred"] = {"since": since.isoformat(), "until": until.isoformat()}
        names = _names(self.event)
        if names:
            prefixes = [n[:-1] for n in names if n.endswith("*")]
            exact = [n for n in names if not n.endswith("*")]
            for n in prefixes:
                if "*" in n:
                    raise InvalidFilter(f"event: {n}*: a * may only end a name (a prefix)")
            if exact and prefixes:
                raise InvalidFilter("event: give exact names or prefixes (name*), not both")
            for n in exact:
                if "*" in n:
                    raise InvalidFilter(f"event: {n}: a * may only end a name (a prefix)")
            out["event"] = {"prefix": prefixes} if prefixes else {"name": exact}
        resource: dict[str, Any] = {}
        if self.resource:
            if self.resource.endswith("*"):
                resource["id_prefix"] = [self.resource[:-1]]
            else:
                resource["id"] = [self.resource]
        if self.labels:
            spec: dict[str, list[str]] = {}
            for item in self.labels:
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise InvalidFilter(f"label: {item!r} is not key=value")
                spec.setdefault(key.strip(), []).append(value.strip())
            resource["labels"] = spec
        if resource:
            out["resource"] = resource
        related: dict[str, Any] = {}
        if self.related:
            related["labels"] = {"prefect.resource.id": self.related}
        if self.role:
            related["role"] = [self.role]
        if related:
            out["related"] = related
        if self.q:
            out["text"] = {"query": self.q}
        return out

    # -- links ------------------------------------------------------------------------------

    def params(self) -> list[tuple[str, str]]:
        pairs = [
            ("range", self.range),
            ("since", self.since),
            ("until", self.until),
            ("event", self.event),
            ("resource", self.resource),
            *(("label", label) for label in self.labels),
            ("related", self.related),
            ("role", self.role),
            ("q", self.q),
            ("page", self.page),
            ("live", "1" if self.live else ""),
        ]
        return [(k, v) for k, v in pairs if v]

    def url(self, path: str = "/", **changes: Any) -> str:
        """This view's URL with ``changes`` (a new filter starts from the first page)."""
        changes.setdefault("page", "")
        qs = urlencode(replace(self, **changes).params())
        return f"{path}?{qs}" if qs else path

    def zoom(self, since: datetime, until: datetime) -> str:
        """The URL of the same filters over [since, until] (a histogram bar)."""
        return self.url(range="", since=since.isoformat(), until=until.isoformat())

    @property
    def active(self) -> bool:
        """Any filter besides the time range."""
        return bool(
            self.event or self.resource or self.labels or self.related or self.role or self.q
        )


def bucket_seconds(since: datetime, until: datetime) -> int:
    """The histogram's bucket size: the smallest nice step giving at most ``MAX_BARS`` bars."""
    span = max((until - since).total_seconds(), 1.0)
    for step in NICE_STEPS:
        if math.ceil(span / step) <= MAX_BARS:
            return step
    return NICE_STEPS[-1]
