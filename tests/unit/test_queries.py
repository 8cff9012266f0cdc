"""The feed's reads (``collector.store.feed_pages`` and ``feed_counts``): keyset paging that
stays correct while events arrive, signed page tokens, and Prefect's counts (P§4.5–4.7) against
a real DuckDB store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import orjson
import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.feed import PIVOT, Page, time_buckets
from collector.domain.filters import EventFilter, parse_filter
from collector.errors import InvalidFilter
from collector.store.duckdb_store import EventStore, columns_to_arrow
from collector.store.feed_counts import count_events
from collector.store.feed_pages import query_events

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = b"test-key-0123456789"


class Feed:
    """A store plus helpers to add events and read every page of a query."""

    def __init__(self, path: Path) -> None:
        self.store = EventStore(path)
        self._store_cur = self.store.cursor()
        self._n = 0
        self._pending = EventColumns()
        self._received: list[int] = []

    @property
    def cur(self) -> duckdb.DuckDBPyConnection:
        """The reading cursor, after storing what was added (one insert per batch)."""
        if self._pending:
            self.store.append(columns_to_arrow(self._pending, self._received))
            self._pending, self._received = EventColumns(), []
        return self._store_cur

    def close(self) -> None:
        self._store_cur.close()
        self.store.close()

    def add(
        self,
        minutes_ago: float,
        name: str = "app.order.shipped",
        resource: dict[str, str] | None = None,
        related: list[dict[str, str]] | None = None,
        received: datetime = NOW,
        event_id: str | None = None,
    ) -> str:
        self._n += 1
        event_id = event_id or str(UUID(int=self._n))
        self._pending.append(
            event_id,
            datetime_to_us(NOW - timedelta(minutes=minutes_ago)),
            name,
            resource or {"prefect.resource.id": f"app.order.{self._n}"},
            related or [],
            orjson.dumps({"n": self._n}).decode(),
        )
        self._received.append(datetime_to_us(received))
        return event_id

    def page(self, flt: Any = None, limit: int = 5, token: str | None = None) -> Page:
        f = parse_filter(flt) if not isinstance(flt, EventFilter) else flt
        return query_events(self.cur, f, limit, token, NOW, token_key=KEY)

    def all_pages(self, flt: Any = None, limit: int = 5) -> list[list[str]]:
        pages = []
        page = self.page(flt, limit)
        pages.append([str(e.id) for e in page.events])
        while page.next_page:
            page = self.page(token=page.next_page)
            pages.append([str(e.id) for e in page.events])
        return pages

    def expected(self, flt: Any = None) -> list[str]:
        """Brute force: every stored event the filter includes, in feed order."""
        f = (parse_filter(flt) if not isinstance(flt, EventFilter) else flt).resolve(NOW)
        rows = self.cur.execute("SELECT id::VARCHAR FROM events").fetchall()
        events = [self.store.get_event(r[0]) for r in rows]
        kept = [e for e in events if e is not None and f.includes(e)]
        kept.sort(key=lambda e: (e.occurred, str(e.id)), reverse=f.order == "DESC")
        return [str(e.id) for e in kept]


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    f = Feed(tmp_path / "t.duckdb")
    yield f
    f.close()


def flatten(pages: list[list[str]]) -> list[str]:
    return [i for page in pages for i in page]


# --------------------------------------------------------------------------- paging


@pytest.mark.parametrize("order", ["DESC", "ASC"])
def test_pages_cover_everything_once_in_order(feed: Feed, order: str) -> None:
    for m in range(23):
        feed.add(minutes_ago=m * 3)
    pages = feed.all_pages({"order": order}, limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert flatten(pages) == feed.expected({"order": order})


@pytest.mark.parametrize("order", ["DESC", "ASC"])
def test_paging_is_stable_while_events_arrive(feed: Feed, order: str) -> None:
    for m in range(20):
        feed.add(minutes_ago=100 - m)
    snapshot = feed.expected({"order": order})
    first = feed.page({"order": order}, limit=6)
    assert first.total == 20
    # While the client pages: newer events, events backdated into the middle of the range
    # (late arrivals), and events at exactly the last-seen time.
    last = first.events[-1]
    for m in range(10):
        feed.add(minutes_ago=m, received=NOW + timedelta(seconds=1))
    feed.add(minutes_ago=95, received=NOW + timedelta(seconds=2))
    feed.add(
        minutes_ago=(NOW - last.occurred).total_seconds() / 60, received=NOW + timedelta(seconds=3)
    )
    seen = [str(e.id) for e in first.events]
    page = first
    while page.next_page:
        page = feed.page(token=page.next_page)
        assert page.total == 20
        seen += [str(e.id) for e in page.events]
    assert seen == snapshot  # no gaps, no repeats, nothing new mid-way
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize("order", ["DESC", "ASC"])
def test_ties_on_occurred_split_across_pages(feed: Feed, order: str) -> None:
    for i in range(12):
        feed.add(minutes_ago=10 if i < 9 else i)  # nine events at the same instant
    pages = feed.all_pages({"order": order}, limit=4)
    assert flatten(pages) == feed.expected({"order": order})


@pytest.mark.parametrize("order", ["DESC", "ASC"])
def test_pages_with_filter_and_old_matches(feed: Feed, order: str) -> None:
    # The newest events do not match, so the newest-first probe window misses and widens
    # (DESC); the oldest-first one (ASC) finds a full page at once.
    for m in range(200):
        feed.add(minutes_ago=m, name="app.noise")
    for m in range(60):
        feed.add(
            minutes_ago=5000 + m,
            name="app.order.shipped",
            resource={"prefect.resource.id": f"app.order.{m}", "region": "eu"},
        )
    flt = {
        "event": {"prefix": ["app.order."]},
        "resource": {"labels": {"region": "eu"}},
        "order": order,
    }
    assert feed.page(flt).total == 60
    assert flatten(feed.all_pages(flt, limit=5)) == feed.expected(flt)


def test_dense_recent_matches_are_exact(feed: Feed) -> None:
    for m in range(300):
        feed.add(minutes_ago=m * 0.5, name="app.order.shipped" if m % 3 else "app.other")
    flt = {"event": {"name": ["app.order.shipped"]}}
    assert flatten(feed.all_pages(flt, limit=7)) == feed.expected(flt)


@pytest.mark.parametrize("received_days_ago", [0, 3, 30])
def test_first_page_whenever_events_were_last_received(feed: Feed, received_days_ago: int) -> None:
    # The newest `received` is looked for in the last hour, then week, then everywhere.
    received = NOW - timedelta(days=received_days_ago)
    for m in range(8):
        feed.add(minutes_ago=received_days_ago * 24 * 60 + m, received=received)
    assert feed.page(limit=5).total == 8
    assert flatten(feed.all_pages(limit=5)) == feed.expected()


def test_last_page_has_no_token(feed: Feed) -> None:
    for m in range(10):
        feed.add(minutes_ago=m)
    pages = feed.all_pages(limit=5)
    assert [len(p) for p in pages] == [5, 5]  # no trailing empty page


def test_empty_store_and_no_matches(feed: Feed) -> None:
    assert feed.page() == Page(events=[], total=0, next_page=None)
    feed.add(minutes_ago=1)
    assert feed.page({"event": {"name": ["nope"]}}) == Page(events=[], total=0, next_page=None)


def test_limit_zero_counts_but_returns_nothing(feed: Feed) -> None:
    for m in range(3):
        feed.add(minutes_ago=m)
    assert feed.page(limit=0) == Page(events=[], total=3, next_page=None)


def test_negative_limit_is_rejected(feed: Feed) -> None:
    with pytest.raises(InvalidFilter, match="limit"):
        feed.page(limit=-1)


def test_default_window_is_prefects(feed: Feed) -> None:
    feed.add(minutes_ago=60 * 24 * 200)  # older than start of today − 180 days
    feed.add(minutes_ago=-5)  # occurred after now
    kept = feed.add(minutes_ago=1)
    page = feed.page()
    assert [str(e.id) for e in page.events] == [kept]
    assert page.total == 1


def test_id_filter_caps_the_page(feed: Feed) -> None:
    ids = [feed.add(minutes_ago=m) for m in range(6)]
    page = feed.page({"id": {"id": ids[:2]}}, limit=5)
    assert {str(e.id) for e in page.events} == set(ids[:2])
    assert page.next_page is None


def test_events_round_trip(feed: Feed) -> None:
    related = [{"prefect.resource.id": "app.customer.1", "prefect.resource.role": "customer"}]
    event_id = feed.add(
        minutes_ago=1, resource={"prefect.resource.id": "r", "k": "v"}, related=related
    )
    (event,) = feed.page().events
    assert str(event.id) == event_id
    assert event.resource == {"prefect.resource.id": "r", "k": "v"}
    assert event.related == related
    assert event.payload == {"n": 1}
    assert event.occurred == NOW - timedelta(minutes=1)
    assert event.received == NOW
    assert event.occurred.tzinfo is not None


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        pytest.param("DESC", [(0, 0), (1, 1), (2, 2), (3, 3)], id="newest-per-resource"),
        pytest.param("ASC", [(3, 11), (2, 10), (1, 9), (0, 8)], id="oldest-per-resource"),
    ],
)
def test_distinct_returns_the_first_event_per_resource(
    feed: Feed, order: str, expected: list[tuple[int, int]]
) -> None:
    for m in range(12):
        feed.add(minutes_ago=m, resource={"prefect.resource.id": f"app.order.{m % 4}"})
    flt = {"resource": {"distinct": True}, "order": order}
    assert feed.page(flt, limit=3).total == 4
    events = [feed.store.get_event(i) for i in flatten(feed.all_pages(flt, limit=3))]
    assert [(e.resource["prefect.resource.id"], e.occurred) for e in events if e] == [
        (f"app.order.{k}", NOW - timedelta(minutes=m)) for k, m in expected
    ]


# --------------------------------------------------------------------------- tokens


def test_page_token_is_opaque(feed: Feed) -> None:
    for m in range(8):
        feed.add(minutes_ago=m)
    token = feed.page(limit=3).next_page
    assert token is not None
    assert "app." not in token and "{" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:], id="body-edit"),
        pytest.param(lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1], id="sig-edit"),
        pytest.param(lambda t: t.split(".")[0], id="no-signature"),
        pytest.param(lambda t: "not a token", id="garbage"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: t + ".x", id="extra-part"),
    ],
)
def test_tampered_tokens_are_rejected(feed: Feed, mangle: Any) -> None:
    for m in range(8):
        feed.add(minutes_ago=m)
    token = feed.page(limit=3).next_page
    assert token is not None
    with pytest.raises(InvalidFilter, match="page token"):
        feed.page(token=mangle(token))


def test_token_from_another_key_is_rejected(feed: Feed) -> None:
    for m in range(8):
        feed.add(minutes_ago=m)
    token = query_events(feed.cur, EventFilter(), 3, None, NOW, token_key=b"other").next_page
    assert token is not None
    with pytest.raises(InvalidFilter, match="page token"):
        feed.page(token=token)


def test_forged_filter_with_valid_shape_is_rejected(feed: Feed) -> None:
    import base64

    for m in range(8):
        feed.add(minutes_ago=m)
    token = feed.page(limit=3).next_page
    assert token is not None
    body, sig = token.split(".")
    data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["n"] = 1000
    forged = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    with pytest.raises(InvalidFilter, match="signature"):
        feed.page(token=f"{forged}.{sig}")


# --------------------------------------------------------------------------- counting


def test_count_by_event_orders_by_count_then_label(feed: Feed) -> None:
    for name, n in [("b.event", 2), ("a.event", 2), ("c.event", 3)]:
        for m in range(n):
            feed.add(minutes_ago=m + 1, name=name)
    counts = count_events(feed.cur, None, "event", now=NOW)
    assert [(c.value, c.label, c.count) for c in counts] == [
        ("c.event", "c.event", 3),
        ("a.event", "a.event", 2),
        ("b.event", "b.event", 2),
    ]
    assert counts[0].start_time == NOW - timedelta(minutes=3)
    assert counts[0].end_time == NOW - timedelta(minutes=1)


def test_count_by_resource_labels_with_the_most_recent_name(feed: Feed) -> None:
    def res(name_key: str | None, name: str = "") -> dict[str, str]:
        out = {"prefect.resource.id": "app.flow.1"}
        if name_key:
            out[name_key] = name
        return out

    feed.add(minutes_ago=30, resource=res("prefect.resource.name", "old name"))
    feed.add(minutes_ago=10, resource=res("prefect.resource.name", "new name"))
    feed.add(minutes_ago=20, resource=res("prefect.resource.name", "middle name"))
    feed.add(
        minutes_ago=5, resource={"prefect.resource.id": "app.flow.2", "prefect.name": "legacy"}
    )
    feed.add(minutes_ago=5, resource={"prefect.resource.id": "app.flow.3"})
    counts = count_events(feed.cur, None, "resource", now=NOW)
    assert [(c.value, c.label, c.count) for c in counts] == [
        ("app.flow.1", "new name", 3),  # most events first
        ("app.flow.3", "app.flow.3", 1),  # then by label: no name falls back to the id
        ("app.flow.2", "legacy", 1),  # prefect.name is the second choice
    ]


def test_count_respects_the_filter(feed: Feed) -> None:
    feed.add(minutes_ago=1, name="a.x")
    feed.add(minutes_ago=1, name="b.x")
    counts = count_events(feed.cur, parse_filter({"event": {"prefix": ["a."]}}), "event", now=NOW)
    assert [c.value for c in counts] == ["a.x"]


def _window(since: datetime, until: datetime) -> EventFilter:
    return parse_filter({"occurred": {"since": since.isoformat(), "until": until.isoformat()}})


def test_count_by_time_zero_fills_aligned_buckets(feed: Feed) -> None:
    day = datetime(2026, 11, 20, tzinfo=UTC)
    feed.add(minutes_ago=(NOW - (day + timedelta(hours=1, minutes=5))).total_seconds() / 60)
    feed.add(minutes_ago=(NOW - (day + timedelta(hours=1, minutes=55))).total_seconds() / 60)
    feed.add(minutes_ago=(NOW - (day + timedelta(hours=3))).total_seconds() / 60)
    counts = count_events(
        feed.cur,
        _window(day + timedelta(minutes=30), day + timedelta(hours=4)),
        "time",
        "hour",
        1,
        now=NOW,
    )
    assert [c.count for c in counts] == [0, 2, 0, 1, 0]
    assert [c.value for c in counts] == ["0", "1", "2", "3", "4"]
    assert counts[0].label == "2026-11-20T00:00:00+00:00"  # the bucket holding `since`
    assert counts[0].start_time == day
    assert counts[0].end_time == day + timedelta(hours=1) - timedelta(microseconds=1)
    assert counts[-1].start_time == day + timedelta(hours=4)  # the bucket holding `until`


def test_week_buckets_start_on_monday_from_the_pivot(feed: Feed) -> None:
    feed.add(minutes_ago=60)
    counts = count_events(
        feed.cur, _window(datetime(2026, 10, 1, tzinfo=UTC), NOW), "time", "week", 1, now=NOW
    )
    assert all(c.start_time.weekday() == 0 for c in counts)
    assert all((c.start_time - PIVOT) % timedelta(days=7) == timedelta(0) for c in counts)
    assert counts[-1].count == 1
    assert sum(c.count for c in counts) == 1


def test_no_future_buckets(feed: Feed) -> None:
    feed.add(minutes_ago=30)
    feed.add(minutes_ago=-90)  # an event from the future, within `until`
    counts = count_events(
        feed.cur,
        _window(NOW - timedelta(hours=3), NOW + timedelta(days=2)),
        "time",
        "hour",
        1,
        now=NOW,
    )
    assert counts[-1].start_time == NOW  # the hour holding now, nothing later
    assert [c.count for c in counts] == [0, 0, 1, 0]


def test_sub_unit_intervals_stop_at_now(feed: Feed) -> None:
    counts = count_events(
        feed.cur,
        _window(NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
        "time",
        "hour",
        0.25,
        now=NOW + timedelta(minutes=5),
    )
    assert counts[-1].start_time == NOW  # the quarter holding now; none after it
    assert len(counts) == 5


def test_buckets_are_stable(feed: Feed) -> None:
    start = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    a = count_events(
        feed.cur, _window(start, start + timedelta(seconds=30)), "time", "second", 2.5, now=NOW
    )
    b = count_events(
        feed.cur,
        _window(start + timedelta(seconds=9), start + timedelta(seconds=39)),
        "time",
        "second",
        2.5,
        now=NOW,
    )
    assert b[0].start_time == a[3].start_time  # shifted by 9 s: indexes move by 3
    assert [c.start_time for c in a[3:]] == [c.start_time for c in b[: len(a) - 3]]
    assert a[1].label == "2026-11-24T10:00:02.500000+00:00"


def test_day_is_time_by_one_day(feed: Feed) -> None:
    feed.add(minutes_ago=60)
    window = _window(NOW - timedelta(days=3), NOW)
    legacy = count_events(feed.cur, window, "day", "second", 5, now=NOW)
    assert legacy == count_events(feed.cur, window, "time", "day", 1, now=NOW)
    assert len(legacy) == 4


def test_count_by_time_before_the_pivot(feed: Feed) -> None:
    then = datetime(2024, 3, 30, 12, tzinfo=UTC)
    feed.add(minutes_ago=(NOW - then).total_seconds() / 60)
    counts = count_events(
        feed.cur,
        _window(datetime(2024, 3, 29, tzinfo=UTC), datetime(2024, 4, 2, tzinfo=UTC)),
        "time",
        "day",
        1,
        now=NOW,
    )
    assert [c.start_time.day for c in counts] == [29, 30, 31, 1, 2]
    assert [c.count for c in counts] == [0, 1, 0, 0, 0]


def test_too_many_buckets(feed: Feed) -> None:
    with pytest.raises(InvalidFilter, match="would create 1441 buckets, which is too many"):
        count_events(
            feed.cur, _window(NOW - timedelta(days=1, minutes=1), NOW), "time", "minute", 1, now=NOW
        )
    # Prefect's rule counts ceil((until − since) / Δ) = 1000 here, which is allowed; the
    # response runs from the bucket holding `since` to the one holding `until`, both ends.
    counts = count_events(
        feed.cur, _window(NOW - timedelta(minutes=1000), NOW), "time", "minute", 1, now=NOW
    )
    assert len(counts) == 1001


def test_default_window_by_minute_is_too_many(feed: Feed) -> None:
    with pytest.raises(InvalidFilter, match="too many"):
        count_events(feed.cur, None, "time", "minute", 1, now=NOW)


@pytest.mark.parametrize("interval", [0.0, 0.009, -1])
def test_minimum_interval(feed: Feed, interval: float) -> None:
    with pytest.raises(InvalidFilter, match=r"The minimum interval is 0\.01"):
        count_events(feed.cur, None, "time", "day", interval, now=NOW)


def test_unknown_countable_and_unit(feed: Feed) -> None:
    with pytest.raises(InvalidFilter, match="countable"):
        count_events(feed.cur, None, "colour", now=NOW)
    with pytest.raises(InvalidFilter, match="time_unit"):
        count_events(feed.cur, None, "time", "fortnight", now=NOW)


def test_time_buckets_arithmetic() -> None:
    first, delta, n = time_buckets(
        PIVOT + timedelta(hours=25, minutes=1), PIVOT + timedelta(hours=27), "hour", 1, now=NOW
    )
    assert (first, delta, n) == (25, timedelta(hours=1), 3)
    first, _, n = time_buckets(PIVOT - timedelta(minutes=1), PIVOT, "hour", 1, now=NOW)
    assert (first, n) == (-1, 2)
    _, _, n = time_buckets(NOW + timedelta(hours=1), NOW + timedelta(hours=2), "hour", 1, now=NOW)
    assert n == 0  # entirely in the future


def test_event_count_wire_shape(feed: Feed) -> None:
    feed.add(minutes_ago=1)
    (count,) = count_events(feed.cur, None, "event", now=NOW)
    assert count.to_dict() == {
        "value": "app.order.shipped",
        "label": "app.order.shipped",
        "count": 1,
        "start_time": "2026-11-24T11:59:00.000000Z",
        "end_time": "2026-11-24T11:59:00.000000Z",
    }
