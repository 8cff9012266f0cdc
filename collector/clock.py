"""Time sources. Components take a ``Clock`` so that time can be driven: the server runs on the
``SystemClock``; a backtest moves a ``ManualClock`` through history, and tests drive time with
one too. Nothing else reads wall time for decisions that tests need to control."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Gives the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands where its owner puts it: ``set`` and ``advance`` move it."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now = self._now + timedelta(seconds=seconds)


def now_us() -> int:
    """Microseconds since the Unix epoch, UTC (integer maths, no float rounding)."""
    return time.time_ns() // 1000
