"""A text search's feed total (``feed_pages._count_newest``): counted from the newest events back
and stopped at ``text_total_limit`` matches, when it is a lower bound the page says so — and the
pages themselves stay exactly the filter's matches, in order, whatever the limit.

Checked against brute force (the filter's in-memory ``includes``) on a randomized store whose
texts hold awkward terms: substrings inside words, punctuation, unicode, case, phrases,
excludes and required terms."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.feed import Page
from collector.domain.filters import parse_filter
from collector.store.duckdb_store import (
    EVENT_COLUMNS,
    EventStore,
    columns_to_arrow,
    row_to_event,
)
from collector.store.feed_pages import query_events
from collector.store.filter_sql import filter_sql
from collector.store.lake.lake_store import LakeLocation, LakeStore

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = b"test-key-0123456789"

WORDS = [
    "Timeout",
    "timeout",
    "TIMEOUT",
    "requestTimeout",
    "time-out",
    "time out",
    "db.timeout",
    "Straße",
    "STRASSE",
    "café",
    "ÉCOLE",
    "İstanbul",
    "naïve",
    "tab\there",
    'quote"d',
    "back\\slash",
    "a/b",
    "x:y",
    "100%",
    "ok",
    "error",
    "retry",
    "payments",
    "eu-west-1",
]
QUERIES = [
    "timeout",
    "TimeOut",
    "meou",
    "time-out",
    "time out",
    '"time out"',
    "db.time",
    "out",
    "straße",
    "strasse",
    "café",
    "école",
    "istanbul",
    "naïve",
    '"tab\\there"',
    'quote"d',
    "back\\slash",
    "a/b",
    "x:y",
    "100%",
    "ok -error",
    "+retry timeout",
    "-timeout",
    "!ok",
    "payments +eu",
    '+"eu-west" -retry',
    "zzz-none",
    "e",
    "ok error retry",
]


Store = EventStore | LakeStore


def _store(path: Path, n: int, seed: int) -> EventStore:
    store = EventStore(path)
    _fill(store, n, seed)
    return store


def _fill(store: Store, n: int, seed: int) -> None:
    rng = random.Random(seed)
    cols = EventColumns()
    received: list[int] = []
    for i in range(n):
        # Most within the last day, some over the last 30 days, a few beyond the default
        # 180-day range: slices of every width, and matches the filter's `since` excludes.
        age = rng.choice(
            [timedelta(minutes=rng.uniform(0, 600))] * 6
            + [timedelta(days=rng.uniform(0, 30)), timedelta(days=rng.uniform(170, 200))]
        )
        words = rng.sample(WORDS, rng.randint(0, 3))
        cols.append(
            str(UUID(int=i + 1)),
            datetime_to_us(NOW - age),
            rng.choice(["app.order.shipped", "app.Timeout.hit", "otel.span.ok"]),
            {"prefect.resource.id": f"app.r.{i % 7}", "region": rng.choice(["eu", "us", "Ü"])},
            [
                {
                    "prefect.resource.id": f"app.c.{i % 3}",
                    "prefect.resource.role": rng.choice(["customer", "retry-owner"]),
                }
            ]
            if rng.random() < 0.3
            else [],
            orjson.dumps({"msg": " ".join(words), "n": i}).decode(),
        )
        received.append(datetime_to_us(NOW))
    store.append(columns_to_arrow(cols, received))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    s = _store(tmp_path_factory.mktemp("text") / "t.duckdb", 240, seed=13)
    yield s
    s.close()


def _expected(store: Store, flt: dict[str, Any]) -> list[str]:
    """The plain scan: every stored event the filter's SQL selects, in feed order."""
    f = parse_filter(flt).resolve(NOW)
    where, params = filter_sql(f)
    direction = "DESC" if f.order == "DESC" else "ASC"
    cur = store.cursor()
    try:
        rows = cur.execute(
            f"SELECT e.id::VARCHAR FROM events e WHERE {where} "
            f"ORDER BY e.occurred {direction}, e.id {direction}",
            params,
        ).fetchall()
    finally:
        cur.close()
    return [r[0] for r in rows]


def _brute_force(store: Store, flt: dict[str, Any]) -> list[str]:
    """The filter's in-memory ``includes`` over every stored event, in feed order."""
    f = parse_filter(flt).resolve(NOW)
    cur = store.cursor()
    try:
        rows = cur.execute(f"SELECT {EVENT_COLUMNS} FROM events").fetchall()
    finally:
        cur.close()
    events = [e for e in map(row_to_event, rows) if f.includes(e)]
    events.sort(key=lambda e: (e.occurred, str(e.id)), reverse=f.order == "DESC")
    return [str(e.id) for e in events]


def _pages(store: Store, flt: dict[str, Any], limit: int, total_limit: int) -> list[Page]:
    cur = store.cursor()
    try:
        page = query_events(
            cur, parse_filter(flt), limit, None, NOW, token_key=KEY, text_total_limit=total_limit
        )
        pages = [page]
        while page.next_page:
            page = query_events(cur, None, 0, page.next_page, NOW, token_key=KEY)
            pages.append(page)
        return pages
    finally:
        cur.close()


@pytest.mark.parametrize("query", QUERIES)
def test_pages_are_exact_and_the_total_honest_at_any_limit(store: EventStore, query: str) -> None:
    flt: dict[str, Any] = {"text": {"query": query}}
    expected = _expected(store, flt)
    if "istanbul" not in query:
        # DuckDB lowercases "İ" to "i", Python to "i̇" (two code points): for that letter
        # alone the SQL and the in-memory matcher differ (left as it is, see the report).
        assert expected == _brute_force(store, flt)
    for total_limit, order in ((0, "DESC"), (1, "DESC"), (3, "ASC"), (1000, "DESC")):
        pages = _pages(store, {**flt, "order": order}, 30, total_limit)
        got = [str(e.id) for p in pages for e in p.events]
        want = expected if order == "DESC" else expected[::-1]
        assert got == want, (query, total_limit, order)
        first = pages[0]
        # Every page of one listing says the same.
        assert {(p.total, p.total_is_lower_bound) for p in pages} == {
            (first.total, first.total_is_lower_bound)
        }
        if first.total_is_lower_bound:
            assert 0 < total_limit == first.total <= len(expected)
        else:
            assert first.total == len(expected), (query, total_limit)


def test_a_common_term_stops_at_the_limit_and_a_rare_one_is_exact(store: EventStore) -> None:
    common = {"text": {"query": "ok"}}
    assert len(_expected(store, common)) > 25
    first = _pages(store, common, 5, 25)[0]
    assert (first.total, first.total_is_lower_bound) == (25, True)
    # No limit: the exact count.
    exact = _pages(store, common, 5, 0)[0]
    assert (exact.total, exact.total_is_lower_bound) == (len(_expected(store, common)), False)
    rare = _pages(store, {"text": {"query": "zzz-none"}}, 5, 25)[0]
    assert (rare.total, rare.total_is_lower_bound, rare.events) == (0, False, [])


def test_other_filters_and_distinct_are_always_counted_exactly(store: EventStore) -> None:
    by_name = {"event": {"prefix": ["app."]}}
    first = _pages(store, by_name, 5, 1)[0]
    assert (first.total, first.total_is_lower_bound) == (len(_expected(store, by_name)), False)
    # One event per resource: a distinct count has no newest-first shortcut.
    distinct = {"text": {"query": "ok"}, "resource": {"distinct": True}}
    matches = [store.get_event(i) for i in _expected(store, {"text": {"query": "ok"}})]
    resources = {e.resource["prefect.resource.id"] for e in matches if e is not None}
    first = _pages(store, distinct, 5, 1)[0]
    assert (first.total, first.total_is_lower_bound) == (len(resources), False)
    assert len(resources) > 1


def test_text_with_other_parts_and_a_narrow_range(store: EventStore) -> None:
    since = (NOW - timedelta(hours=3)).isoformat()
    flt = {
        "text": {"query": "timeout -retry"},
        "event": {"prefix": ["app."]},
        "occurred": {"since": since, "until": NOW.isoformat()},
    }
    expected = _expected(store, flt)
    for total_limit in (0, 2, 1000):
        pages = _pages(store, flt, 4, total_limit)
        assert [str(e.id) for p in pages for e in p.events] == expected


def test_matches_all_at_one_time_page_to_the_end(tmp_path: Path) -> None:
    # The counted range is a single instant: the probe windows must still grow and end.
    store = EventStore(tmp_path / "same.duckdb")
    try:
        cols = EventColumns()
        for i in range(9):
            at = NOW - (timedelta(0) if i < 6 else timedelta(days=2 + i))
            cols.append(
                str(UUID(int=i + 1)),
                datetime_to_us(at),
                "app.x",
                {"prefect.resource.id": f"app.r.{i}"},
                [],
                orjson.dumps({"m": "timeout"}).decode(),
            )
        store.append(columns_to_arrow(cols, [datetime_to_us(NOW)] * 9))
        flt = {"text": {"query": "timeout"}}
        for order in ("DESC", "ASC"):
            pages = _pages(store, {**flt, "order": order}, 2, 3)
            assert (pages[0].total, pages[0].total_is_lower_bound) == (3, True)
            got = [str(e.id) for p in pages for e in p.events]
            want = _expected(store, flt)
            assert got == (want if order == "DESC" else want[::-1])
            assert len(got) == 9
    finally:
        store.close()


def test_the_lake_backend_answers_the_same(tmp_path: Path) -> None:
    location = LakeLocation.parse(f"duckdb:{tmp_path / 'catalog.duckdb'}", str(tmp_path / "data"))
    lake = LakeStore(location)
    try:
        _fill(lake, 80, seed=5)
        for query in ("timeout", "ok -error", "zzz-none"):
            flt = {"text": {"query": query}}
            expected = _expected(lake, flt)
            for total_limit in (0, 2):
                pages = _pages(lake, flt, 9, total_limit)
                assert [str(e.id) for p in pages for e in p.events] == expected
                first = pages[0]
                lower = 0 < total_limit <= len(expected) and first.total_is_lower_bound
                assert first.total == (total_limit if lower else len(expected))
        first = _pages(lake, {"text": {"query": "ok"}}, 9, 2)[0]
        assert (first.total, first.total_is_lower_bound) == (2, True)
    finally:
        lake.close()
