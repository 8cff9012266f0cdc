"""The feed's answers and Prefect's counting rules (SPEC §6, P§4.5–4.7), the same for every
storage backend: ``Page`` (one feed page with its next-page token), ``EventCount`` /
``CountResult`` (a count-by answer), what may be counted (``Countable``), the time units and
the bucket arithmetic (``time_buckets``, aligned to Prefect's pivot). A backend computes the
rows; the rules for which buckets exist and which requests are refused live here, once.
No database, no clock (``now`` is passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from collector.domain.events import ReceivedEvent, datetime_to_us, format_time
from collector.errors import InvalidFilter


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the feed: Prefect's ``EventPage`` with an opaque token for the next one.

    ``total`` counts every match, except that a text search stops counting at
    ``query.text_total_limit``: then ``total`` is that limit and ``total_is_lower_bound``
    says there are more (docs/feed.md)."""

    events: list[ReceivedEvent]
    total: int
    next_page: str | None
    total_is_lower_bound: bool = False


# Prefect's PIVOT_DATETIME: a Monday, so week buckets start on Mondays (P§4.7).
PIVOT = datetime(2024, 4, 1, tzinfo=UTC)
PIVOT_US = datetime_to_us(PIVOT)
MAX_BUCKETS = 1000
MIN_INTERVAL = 0.01


class Countable(StrEnum):
    """What ``count_events`` groups by (``day`` is the legacy ``time`` with day × 1)."""

    DAY = "day"
    TIME = "time"
    EVENT = "event"
    RESOURCE = "resource"


class TimeUnit(StrEnum):
    WEEK = "week"
    DAY = "day"
    HOUR = "hour"
    MINUTE = "minute"
    SECOND = "second"

    def as_seconds(self, interval: float) -> float:
        seconds = {"week": 604_800, "day": 86_400, "hour": 3_600, "minute": 60, "second": 1}
        return seconds[self.value] * interval

    def as_timedelta(self, interval: float) -> timedelta:
        return timedelta(seconds=self.as_seconds(interval))


# The calendar every bucket must fit in: Python's datetime range, in UTC.
_MIN_US = datetime_to_us(datetime.min.replace(tzinfo=UTC))
_MAX_US = datetime_to_us(datetime.max.replace(tzinfo=UTC))
_CALENDAR_US = _MAX_US - _MIN_US


def interval_value(value: object) -> float:
    """A request's ``time_interval`` as a float: a finite number of at least 0.01.

    A number in a string (``"2"``) is taken, as Prefect's model takes it. Anything else —
    text, ``NaN``, infinities, null, lists — raises ``InvalidFilter`` naming the field, so it
    is a 400 / INVALID_ARGUMENT and never an arithmetic error further down.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidFilter(f"time_interval: must be a number, got {_json_kind(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # text that is no number; an int beyond float's range
        raise InvalidFilter(f"time_interval: must be a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise InvalidFilter(f"time_interval: must be a finite number, got {_shown(value)}")
    if number < MIN_INTERVAL:
        raise InvalidFilter("The minimum interval is 0.01 (time_interval)")
    return number


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value that is not a number"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _beyond_calendar(interval: float, unit: TimeUnit) -> str:
    return (
        f"time_interval: buckets of {interval:g} {unit.value}(s) would start or end outside "
        "the years 1-9999; use a smaller interval"
    )


@dataclass(frozen=True, slots=True)
class EventCount:
    """Prefect's ``EventCount``: one row of a count-by response."""

    value: str
    label: str
    count: int
    start_time: datetime
    end_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "label": self.label,
            "count": self.count,
            "start_time": format_time(self.start_time),
            "end_time": format_time(self.end_time),
        }


def parse_enum(kind: type[StrEnum], value: str | StrEnum, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise InvalidFilter(f"{what} must be one of {allowed}, got {value!r}") from None


def time_buckets(
    since: datetime,
    until: datetime,
    time_unit: TimeUnit | str,
    time_interval: object,
    now: datetime,
) -> tuple[int, timedelta, int]:
    """Prefect's bucket rules: ``(first bucket index since the pivot, bucket size, count)``.

    Raises ``InvalidFilter`` for an interval that is not a finite number of at least 0.01
    (``interval_value``), for more than 1000 buckets (Prefect's check,
    ``ceil((until − since) / Δ)``) and for buckets reaching outside the years 1–9999.
    Buckets run from the one containing ``since`` to the one containing ``min(until, now)``:
    no bucket starts in the future.
    """
    interval = interval_value(time_interval)
    unit = parse_enum(TimeUnit, time_unit, "time_unit")
    # Checked before building the timedelta, which overflows past ~2.7M years: a bucket
    # longer than the whole calendar can have no representable start or end anyway.
    if unit.as_seconds(interval) * 1e6 > _CALENDAR_US:
        raise InvalidFilter(_beyond_calendar(interval, unit))
    delta = unit.as_timedelta(interval)
    delta_us = delta // timedelta(microseconds=1)
    if delta_us <= 0:
        raise InvalidFilter("The minimum interval is 0.01")
    since_us, until_us = datetime_to_us(since), datetime_to_us(until)
    wanted = math.ceil(max(0, until_us - since_us) / delta_us)
    if wanted > MAX_BUCKETS:
        raise InvalidFilter(
            f"The given interval would create {wanted} buckets, which is too many. Please "
            f"increase the interval or reduce the time range to produce {MAX_BUCKETS} "
            "buckets or fewer."
        )
    first = (since_us - PIVOT_US) // delta_us
    last = (min(until_us, datetime_to_us(now)) - PIVOT_US) // delta_us
    n = max(0, last - first + 1)
    # Buckets align to the pivot, so a long one may start before year 1 or end after 9999.
    if n and (
        PIVOT_US + first * delta_us < _MIN_US or PIVOT_US + (first + n) * delta_us - 1 > _MAX_US
    ):
        raise InvalidFilter(_beyond_calendar(interval, unit))
    return first, delta, n


@dataclass(frozen=True, slots=True)
class CountResult:
    """A count-by answer cut to its top rows: ``groups`` is how many rows there were in all."""

    counts: list[EventCount]
    groups: int


__all__ = [
    "MAX_BUCKETS",
    "MIN_INTERVAL",
    "PIVOT",
    "PIVOT_US",
    "CountResult",
    "Countable",
    "EventCount",
    "Page",
    "TimeUnit",
    "interval_value",
    "parse_enum",
    "time_buckets",
]
