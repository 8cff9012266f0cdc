"""The feed's histogram as server-drawn SVG: one bar per time bucket, each a link that zooms the
feed to its bucket (the page's script adds drag-to-zoom). Pure geometry, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.domain.feed import EventCount

WIDTH = 1000.0  # the SVG's user units; it is stretched to the page's width
HEIGHT = 100.0
GAP = 0.15  # of a bar's slot, between bars


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    start: datetime
    end: datetime
    href: str


@dataclass(frozen=True, slots=True)
class Histogram:
    bars: list[Bar]
    since: datetime
    until: datetime
    max_count: int
    total: int
    bucket: timedelta
    width: float = WIDTH
    height: float = HEIGHT

    @property
    def ticks(self) -> list[datetime]:
        """Five evenly spaced times for the axis under the chart."""
        span = self.until - self.since
        return [self.since + span * i / 4 for i in range(5)]


def build_histogram(
    counts: Sequence[EventCount],
    since: datetime,
    until: datetime,
    zoom: Callable[[datetime, datetime], str],
) -> Histogram:
    """Bars for ``counts`` (time buckets) placed on [since, until]; empty buckets get no bar.
    ``zoom(start, end)`` is a bucket's link."""
    span = max((until - since).total_seconds(), 1e-6)
    top = max((c.count for c in counts), default=0)
    bars = []
    bucket = timedelta(0)
    for c in counts:
        bucket = c.end_time - c.start_time
        if c.count <= 0:
            continue
        start = max(c.start_time, since)
        end = min(c.end_time, until)
        if end <= start:
            continue
        x0 = (start - since).total_seconds() / span * WIDTH
        x1 = (end - since).total_seconds() / span * WIDTH
        slot = x1 - x0
        height = max(c.count / top * (HEIGHT - 4), 1.5)
        bars.append(
            Bar(
                x=round(x0 + slot * GAP / 2, 2),
                y=round(HEIGHT - height, 2),
                width=round(max(slot * (1 - GAP), 0.5), 2),
                height=round(height, 2),
                count=c.count,
                start=c.start_time,
                end=c.end_time,
                href=zoom(c.start_time, c.end_time),
            )
        )
    return Histogram(
        bars=bars,
        since=since,
        until=until,
        max_count=top,
        total=sum(c.count for c in counts),
        bucket=bucket,
    )
