"""Parsing of CLI argument forms shared by commands: ``k=v`` labels, JSON options, times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.errors import InvalidInput

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_labels(pairs: list[str], option: str) -> dict[str, str]:
    """``["k=v", …]`` → dict, with an error naming the option on a bad pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{option}: expected key=value, got {pair!r}")
        out[key] = value
    return out


def parse_json(text: str | None, option: str, kind: type) -> Any:
    """Parse a JSON option that must decode to ``kind`` (dict or list)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise InvalidInput(f"{option}: must be a JSON {'object' if kind is dict else 'array'}")
    return value


def parse_duration(text: str) -> timedelta | None:
    """``15m``/``2h``/``7d``/``30s``/``1w`` → timedelta, else None."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long ago."""
    delta = parse_duration(text)
    if delta is not None:
        return (now or datetime.now(UTC)) - delta
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{option}: {text!r} is neither an ISO 8601 time nor a duration like 15m, 2h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
