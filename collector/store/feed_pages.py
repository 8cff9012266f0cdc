"""The event feed's pages over the DuckDB store (SPEC §6, P§4.5–4.6): filtered pages with
keyset paging. Counts are ``feed_counts.py``; the answer records and counting rules are
``collector.domain.feed``.

Owns the SQL of the feed and the page-token format. Takes a DuckDB cursor and an
``EventFilter``; never parses wire data and never reads the clock (``now`` is passed in).

Paging (Herald's divergence from Prefect's offsets, P§4.5): pages are keyset pages on
``(occurred, id)``. The first page freezes the result set — the filter with its resolved
``since``/``until``, and ``received <= R`` where R is the newest ``received`` stored when the
first page was read — and every later page continues strictly after the last row it returned.
Events that arrive while a client pages can therefore neither shift rows (no gaps, no repeats)
nor appear mid-way; ``total`` is counted once, on the first page, like Prefect's.

Page tokens are opaque: ``base64url(json) "." base64url(HMAC-SHA256(key, json))``. A token that
does not decode or whose signature does not match raises ``InvalidFilter``.

How a page is read: (1) the keys of the next ``limit + 1`` rows, by a narrow query over a time
window probed from the newest (oldest, for ASC) end and widened until it holds a full page —
exact, since every row outside the window sorts after every row inside it; (2) the full rows of
those keys; and on the first page, before both, (3) the bound R (``_newest_received``) and (4)
the ``total`` count, which also gives the matching rows' ``occurred`` range that sizes the
windows. The probes rely on rows being stored roughly in ``occurred`` order (as ingest appends
them); for data that is not, they stay exact but prune nothing, costing up to two extra scans.

A text search's total (decision, issue 13; numbers in docs/benchmarks.md, "Feed queries"): (4)
counts it in time slices from the newest end back (``_count_newest``) and stops once
``query.text_total_limit`` matches (default 1,000) are counted; the page then says ``total`` =
that limit and ``total_is_lower_bound`` — Elasticsearch's ``track_total_hits`` (10,000 there),
carried by the token to every later page and shown on every surface (HTTP, gRPC, SDK, CLI, web
UI "1000+"). The pages themselves stay exact (windows are sized from the counted slices but
never cut the filter's range). Why not an exact total: a text term is a case-insensitive
*substring* of the name, label values and payload JSON, so without an index the count reads
every row in range (p50 ~460 ms at 1M events, ~5.5 s at 10M), and every index measured costs
ingest far more than the 10 % it may: a stored lowercased search-text column +37–57 % insert
CPU per event (and still ~220–350 ms CPU of scan per 1M rows, ~1 GB/s — no 10M page under
500 ms); token postings ~30 rows per event; DuckDB's FTS extension (``duckdb-ext-fts``)
rebuilds its whole index on every change (58 s per 1M events here), splits words on letters
only and matches whole words, not substrings. A common term now reaches the limit in the
newest slice or two; a rare one (fewer matches than the limit) is still a full scan, exact.

Measured on this 2-core machine (shared with other work, so ±30% noise), p50, 1M synthetic
events over 7 days, name prefix + ``region = 'eu'`` (12k matches):

=============================================================  ============
top 51 selecting all columns (one query)                        60 ms
(1) top 51 selecting (occurred, id) only                        38 ms
(1) same, inside a 1 h window at the newest end                  3 ms
(2) 51 full rows by (occurred range + filter)                  2.5 ms
(3) ``max(received)`` over all rows / in the newest hour       1.4 / 0.7 ms
(4) ``count(*)`` of the filter                                  35 ms
(4) ``count(*) WHERE strlen(resource) > 0`` (no filter at all)  25 ms
=============================================================  ============

Speed work for SPEC §11: ``benchmarks/query.py``'s scenarios through ``EventReader``, on the
same stores, the code before (commit 1776f1b) and after run alternately so both see the same
load; p50 in ms:

==========================================  ===========  ============
scenario                                     1M events    10M events
==========================================  ===========  ============
first page, name prefix + label + total       60 → 44     301 → 253
later page (token)                            10 → 10      13 → 8
first page, related (role, id)               144 → 121   1023 → 900
first page, text search                      926 → 455   6203 → 3665
count by time, hour buckets over 7 days       11 → 11      71 → 67
==========================================  ===========  ============

What changed: (3) looks in the newest hour first, where zone maps skip the rest (it was
``max(received), min(occurred), max(occurred)`` over all rows: at 10M 33 ms on an idle
machine, 104 ms on a busy one → 0.7 ms); the windows are sized from the matching rows' range,
which (4) computes for free; and in ``filters.py``: resource labels tested as substrings of
the raw JSON instead of parsed (a substring pre-check before ``->>`` gained a few %; the
substring as the whole, exact test ~20%), related pre-checks most selective first, cheapest
filter parts first, and text terms checked against the lowercased raw columns under ``CASE``
before the searchable text is built (the largest gain).

Why label and related filters no longer read JSON (issue 13): (4) read the ``resource`` (or
``related``) JSON of every row in range, and DuckDB decompresses a whole vector of that
FSST-compressed column as soon as one of its rows passes the cheaper filters — with a 5% name
prefix, every vector; ``strlen(resource)`` over all rows alone was ~70% of (4). Schema version 3
gives them integer keys (``filter_sql.py``: a semi-join on ``resource_key`` through the distinct
label sets, ``list_contains`` over ``related_*_keys``). At 10M events, first page p50: name
prefix + label 289 → 67 ms, related role + id 968 → 135 ms; CPU per first page, the two
versions alternated: 790 → 200 ms and 2,600 → 310 ms (docs/benchmarks.md). The windows and
the fetch narrow the filter's own time range (``_within``), and test labels on the events' JSON
(``filter_sql``'s ``label_sets``): in a short window that is cheaper than the label sets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import duckdb
import orjson
from pydantic import ValidationError

from collector.domain.events import ReceivedEvent, datetime_to_us, us_to_datetime
from collector.domain.feed import Page
from collector.domain.filters import EventFilter, EventOccurredFilter, EventOrder
from collector.errors import InvalidFilter
from collector.store.duckdb_store import row_to_event
from collector.store.filter_sql import filter_sql

TOKEN_VERSION = 1
# How far back from ``now`` the newest ``received`` is looked for before a full scan.
_RECEIVED_PROBES = (timedelta(hours=1), timedelta(days=7))
# A probe window is sized to hold this many times a page (by the filter's average density);
# each miss widens it this many times, then the whole remaining range is read.
_PROBE_SLACK = 4
_PROBE_GROWTH = 16
_MIN_WINDOW = timedelta(milliseconds=1)
# A text search's total is exact up to this many matches, then a lower bound (query_events;
# the server's value is ``query.text_total_limit``).
TEXT_TOTAL_LIMIT = 1000
# Counting a text search from the newest end (``_count_newest``): the first slice, the slack
# on the slice estimated to reach the limit, and the most a slice grows per step.
_FIRST_SLICE = timedelta(hours=1)
_SLICE_SLACK = 1.25
_SLICE_GROWTH = 16

# In the order ``row_to_event`` reads.
_EVENT_COLUMNS = (
    "e.id, e.occurred, e.received, e.event, e.resource, e.related, e.payload, e.follows"
)


@dataclass(frozen=True, slots=True)
class _PageState:
    """What a page token carries: the frozen query and where the previous page ended."""

    filter: EventFilter
    limit: int
    total: int
    received_bound_us: int
    cursor: tuple[int, str] | None  # (occurred µs, id) of the last row returned
    # (min, max) occurred µs of the rows the first page counted: sizes probe windows only.
    data_range: tuple[int, int] | None = None
    # ``total`` is a lower bound: a text search stopped counting at its limit (``_Total``).
    total_is_lower_bound: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def _encode_page_token(state: _PageState, key: bytes) -> str:
    body = orjson.dumps(
        {
            "v": TOKEN_VERSION,
            "f": state.filter.to_json(),
            "n": state.limit,
            "t": state.total,
            "r": state.received_bound_us,
            "c": list(state.cursor) if state.cursor else None,
            "d": list(state.data_range) if state.data_range else None,
            "l": state.total_is_lower_bound,
        }
    )
    return f"{_b64(body)}.{_b64(_sign(key, body))}"


def _decode_page_token(token: str, key: bytes) -> _PageState:
    """Verify and read a token from ``_encode_page_token``; ``InvalidFilter`` if it is not one."""
    try:
        body_text, signature_text = token.split(".")
        body = _unb64(body_text)
        signature = _unb64(signature_text)
    except (ValueError, TypeError):
        raise InvalidFilter("invalid page token: it is not a token this server issued") from None
    if not hmac.compare_digest(signature, _sign(key, body)):
        raise InvalidFilter(
            "invalid page token: the signature does not match (tampered with, or issued by "
            "another server); start again from the first page"
        )
    try:
        data = orjson.loads(body)
        if data.get("v") != TOKEN_VERSION:
            raise InvalidFilter("invalid page token: unsupported version; start again")
        cursor, data_range = data["c"], data.get("d")
        return _PageState(
            filter=EventFilter.model_validate(data["f"]),
            limit=int(data["n"]),
            total=int(data["t"]),
            received_bound_us=int(data["r"]),
            cursor=(int(cursor[0]), str(UUID(cursor[1]))) if cursor else None,
            data_range=(int(data_range[0]), int(data_range[1])) if data_range else None,
            total_is_lower_bound=bool(data.get("l", False)),
        )
    except (
        orjson.JSONDecodeError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
        ValidationError,
    ):
        raise InvalidFilter("invalid page token: malformed contents") from None


def _keyset_sql(order: EventOrder, cursor: tuple[int, str] | None) -> tuple[str, list[Any]]:
    if cursor is None:
        return "TRUE", []
    occurred = us_to_datetime(cursor[0])
    op = "<" if order is EventOrder.DESC else ">"
    return (
        f"(e.occurred {op} ? OR (e.occurred = ? AND e.id {op} ?::UUID))",
        [occurred, occurred, cursor[1]],
    )


def _fetch_scalar(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> Any:
    row = cur.execute(sql, params).fetchone()
    return row[0] if row else None


def _page_keys(
    cur: duckdb.DuckDBPyConnection, state: _PageState, want: int
) -> list[tuple[datetime, str]]:
    """The (occurred, id) of the next ``want`` rows, in feed order."""
    flt = state.filter
    where, params = filter_sql(flt)
    keyset, keyset_params = _keyset_sql(flt.order, state.cursor)
    direction = "DESC" if flt.order is EventOrder.DESC else "ASC"
    order_by = f"ORDER BY e.occurred {direction}, e.id {direction}"
    bound = us_to_datetime(state.received_bound_us)

    if flt.distinct:
        # Prefect: one event per primary resource, the first in the requested order, chosen
        # over the whole (frozen) result, then paged. The window needs every row: no probe.
        sql = (
            f"SELECT e.occurred, e.id::VARCHAR FROM ("
            f"  SELECT e.occurred, e.id FROM events e WHERE ({where}) AND e.received <= ?"
            f"  QUALIFY row_number() OVER (PARTITION BY e.resource_id {order_by}) = 1"
            f") AS e WHERE {keyset} {order_by} LIMIT ?"
        )
        rows = cur.execute(sql, [*params, bound, *keyset_params, want]).fetchall()
        return [(r[0], r[1]) for r in rows]

    def window_keys(window_since: datetime, window_until: datetime, wide: bool) -> list[Any]:
        # The filter narrowed to the window (``_within``); labels on the events' own JSON in
        # a narrow one, through the label sets over the rest (``filter_sql``'s label_sets).
        w_where, w_params = filter_sql(_within(flt, window_since, window_until), label_sets=wide)
        sql = (
            f"SELECT e.occurred, e.id::VARCHAR FROM events e "
            f"WHERE ({w_where}) AND e.received <= ? AND {keyset} {order_by} LIMIT ?"
        )
        return cur.execute(sql, [*w_params, bound, *keyset_params, want]).fetchall()

    since, until = flt.occurred.since, flt.occurred.until
    assert since is not None and until is not None  # resolved before paging
    # Windows are sized by the matches' density over the range they were counted in.
    counted_span: timedelta | None = None
    if state.data_range is not None:
        # Size windows by where the data is, not by the filter's (default 180-day) range.
        low, high = (us_to_datetime(us) for us in state.data_range)
        until = min(until, high)
        if state.total_is_lower_bound:
            # Counted from the newest end only: older matches lie before `low`.
            counted_span = high - low
        else:
            since = max(since, low)
    if state.cursor is not None:
        edge = us_to_datetime(state.cursor[0])
        if flt.order is EventOrder.DESC:
            until = min(until, edge)
        else:
            since = max(since, edge)
    span = until - since
    # Newest-first (oldest-first for ASC) probing: rows are stored roughly in `occurred`
    # order, so a narrow time window lets DuckDB skip most of the table by its zone maps. A
    # window that holds `want` rows is an exact answer: every row outside it sorts after
    # every row inside it. Windows are sized by the filter's average density, then widened.
    window = span * min(1.0, _PROBE_SLACK * want / max(state.total, 1))
    if counted_span is not None:
        # (At least 1 ms: the matches counted may all share one time, and a window must grow.)
        window = max(counted_span * min(1.0, _PROBE_SLACK * want / state.total), _MIN_WINDOW)
    while window < span:
        if flt.order is EventOrder.DESC:
            rows = window_keys(until - window, until, False)
        else:
            rows = window_keys(since, since + window, False)
        if len(rows) >= want:
            return [(r[0], r[1]) for r in rows]
        window *= _PROBE_GROWTH
    # The rest of the range: every matching row lies in it (the data range and the cursor).
    rows = window_keys(since, until, True)
    return [(r[0], r[1]) for r in rows]


def _within(flt: EventFilter, since: datetime, until: datetime) -> EventFilter:
    """``flt`` with its time range narrowed to ``since``..``until`` (both inclusive)."""
    assert flt.occurred.since is not None and flt.occurred.until is not None  # resolved
    occurred = EventOccurredFilter(
        since=max(since, flt.occurred.since), until=min(until, flt.occurred.until)
    )
    return flt.model_copy(update={"occurred": occurred})


def _fetch_events(
    cur: duckdb.DuckDBPyConnection,
    state: _PageState,
    keys: list[tuple[datetime, str]],
) -> list[ReceivedEvent]:
    """The full events for ``keys``, in the keys' order.

    Selected by the keys' occurred range plus the filter (so only matching rows of that short
    range are materialised), then picked by id here. Measured: adding ``ORDER BY … LIMIT`` or
    ``id IN (…)`` to this query makes DuckDB fetch rows by rowid, ~4x slower (11 ms vs 2.5 ms).
    """
    if not keys:
        return []
    lo = min(k[0] for k in keys)
    hi = max(k[0] for k in keys)
    # Narrowed to the keys' range (``_within``), a short one: labels on the events' JSON.
    where, params = filter_sql(_within(state.filter, lo, hi), label_sets=False)
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM events e "
        f"WHERE e.occurred BETWEEN ? AND ? AND ({where}) AND e.received <= ?"
    )
    params = [lo, hi, *params, us_to_datetime(state.received_bound_us)]
    if state.filter.distinct:
        # One event per resource can be far apart, with many matching events in between.
        sql += f" AND e.id IN ({', '.join(['?::UUID'] * len(keys))})"
        params += [k[1] for k in keys]
    wanted = {k[1] for k in keys}
    by_id: dict[str, ReceivedEvent] = {}
    for row in cur.execute(sql, params).fetchall():
        event_id = str(row[0])
        if event_id in wanted:
            by_id[event_id] = row_to_event(row)
    return [by_id[k[1]] for k in keys if k[1] in by_id]


def query_events(
    cur: duckdb.DuckDBPyConnection,
    filter: EventFilter | None,
    limit: int,
    page_token: str | None,
    now: datetime,
    *,
    token_key: bytes,
    text_total_limit: int = TEXT_TOTAL_LIMIT,
) -> Page:
    """One page of events matching ``filter`` (Prefect's ``POST /events/filter``), or the page
    after ``page_token`` (``GET /events/filter/next``).

    With a token, ``filter`` and ``limit`` are ignored: the token carries the frozen query.
    ``now`` resolves the filter's default time range. ``token_key`` signs the tokens; tokens
    from another key raise ``InvalidFilter``. A filter with a text search counts its ``total``
    exactly up to ``text_total_limit`` matches (0: no limit); past it the page says
    ``total_is_lower_bound`` (``_count_newest``).
    """
    if page_token is not None:
        state = _decode_page_token(page_token, token_key)
    else:
        if limit < 0:
            raise InvalidFilter(f"limit must be 0 or more, got {limit}")
        resolved = (filter or EventFilter()).resolve(now)
        bound = _newest_received(cur, now)
        if bound is None:
            return Page(events=[], total=0, next_page=None)
        bound_us = datetime_to_us(bound)
        counted = _count_total(cur, resolved, bound_us, text_total_limit)
        state = _PageState(
            filter=resolved,
            limit=limit,
            total=counted.total,
            received_bound_us=bound_us,
            cursor=None,
            data_range=counted.data_range,
            total_is_lower_bound=counted.lower_bound,
        )
    limit = state.limit
    if state.filter.logical_limit is not None:
        limit = min(limit, state.filter.logical_limit)
    lower_bound = state.total_is_lower_bound
    if limit == 0 or state.total == 0:
        return Page([], state.total, None, total_is_lower_bound=lower_bound)
    keys = _page_keys(cur, state, limit + 1)
    more = len(keys) > limit
    keys = keys[:limit]
    next_page = None
    if more:
        last_occurred, last_id = keys[-1]
        next_page = _encode_page_token(
            _PageState(
                filter=state.filter,
                limit=state.limit,
                total=state.total,
                received_bound_us=state.received_bound_us,
                cursor=(datetime_to_us(last_occurred), last_id),
                data_range=state.data_range,
                total_is_lower_bound=lower_bound,
            ),
            token_key,
        )
    events = _fetch_events(cur, state, keys)
    return Page(events, state.total, next_page, total_is_lower_bound=lower_bound)


def _newest_received(cur: duckdb.DuckDBPyConnection, now: datetime) -> datetime | None:
    """``max(received)`` over all events (None for an empty store): the first page's bound.

    Rows are appended in about ``received`` order, so ``received >= now − 1 h`` lets zone maps
    skip all but the newest row groups, and whenever any row passes it the answer is exact.
    Measured at 10M events: 10 ms for the full ``max()`` → 0.7 ms. A store idle for longer
    falls back to a wider probe, then to the full scan."""
    newest: datetime | None = None
    for back in _RECEIVED_PROBES:
        sql = "SELECT max(received) FROM events WHERE received >= ?"
        newest = _fetch_scalar(cur, sql, [now - back])
        if newest is not None:
            return newest
    newest = _fetch_scalar(cur, "SELECT max(received) FROM events", [])
    return newest


@dataclass(frozen=True, slots=True)
class _Total:
    """A first page's count: ``total``, the (min, max) ``occurred`` µs of the rows counted
    (None if none), which size the probe windows, and whether ``total`` is a lower bound."""

    total: int
    data_range: tuple[int, int] | None
    lower_bound: bool = False


def _count_total(
    cur: duckdb.DuckDBPyConnection,
    flt: EventFilter,
    received_bound_us: int,
    text_total_limit: int = 0,
) -> _Total:
    """The page's ``total`` and the matching rows' ``occurred`` range (free here).

    Exact, except for a text search (not ``distinct``) with ``text_total_limit`` > 0, which is
    counted from the newest end and stops past that many matches (``_count_newest``)."""
    if text_total_limit > 0 and not flt.distinct and _searches_text(flt):
        return _count_newest(cur, flt, received_bound_us, text_total_limit)
    where, params = filter_sql(flt)
    what = "count(DISTINCT e.resource_id)" if flt.distinct else "count(*)"
    sql = (
        f"SELECT {what}, min(e.occurred), max(e.occurred) FROM events e "
        f"WHERE ({where}) AND e.received <= ?"
    )
    row = cur.execute(sql, [*params, us_to_datetime(received_bound_us)]).fetchone()
    if row is None or row[1] is None:
        return _Total(0, None)
    return _Total(int(row[0]), (datetime_to_us(row[1]), datetime_to_us(row[2])))


def _searches_text(flt: EventFilter) -> bool:
    return flt.text is not None and not flt.text.parsed.is_empty


def _count_newest(
    cur: duckdb.DuckDBPyConnection,
    flt: EventFilter,
    received_bound_us: int,
    limit: int,
) -> _Total:
    """Count a text search's matches in time slices from the newest end (``until``) back,
    stopping once ``limit`` are counted: then ``total`` is ``limit`` and a lower bound.

    Why (decision, docs/benchmarks.md "Feed queries"): a text search has no index — a
    substring of the name, label values and payload JSON — so an exact total reads every row
    in range (5.5 s at 10M events), while a common term reaches the limit in the newest few
    percent of them. The first slice is ``_FIRST_SLICE``; each next one is sized from the
    matches per second seen so far (from the newest match back) to reach the limit
    (``_SLICE_SLACK``), at most
    ``_SLICE_GROWTH`` times what is covered, and ×``_SLICE_GROWTH`` while none are seen.
    Each slice is bounded in ``occurred``, so zone maps skip the rest of the table."""
    where, params = filter_sql(flt)
    # A slice is (lo, hi]; the oldest one has no lower bound but the filter's own `since`.
    sql = (
        "SELECT count(*), min(e.occurred), max(e.occurred) FROM events e "
        f"WHERE ({where}) AND e.received <= ? AND e.occurred <= ? <lo>"
    )
    since, until = flt.occurred.since, flt.occurred.until
    assert since is not None and until is not None  # resolved before paging
    bound = us_to_datetime(received_bound_us)
    counted = 0
    low: datetime | None = None
    high: datetime | None = None
    # The first slice: everything after `until` − the first slice's width, where that is counted
    # back from the newest `received` when it is older — so a store idle for a while starts at
    # its newest events, not at an empty hour (late or future-dated rows are in it too).
    hi = until
    width = until - min(until, bound) + _FIRST_SLICE
    while True:
        last = width >= hi - since
        lo = since if last else hi - width
        if last:
            row = cur.execute(sql.replace("<lo>", ""), [*params, bound, hi]).fetchone()
        else:
            row = cur.execute(
                sql.replace("<lo>", "AND e.occurred > ?"), [*params, bound, hi, lo]
            ).fetchone()
        if row is not None and row[0]:
            counted += int(row[0])
            low = row[1]
            high = high or row[2]
        if last:
            break  # every slice read: the count is exact
        if counted >= limit:
            assert low is not None and high is not None
            return _Total(limit, (datetime_to_us(low), datetime_to_us(high)), lower_bound=True)
        covered = until - lo
        if counted == 0:
            width = covered * _SLICE_GROWTH
        else:
            # The matches' density over where they were seen (from the newest one back).
            assert high is not None
            seen = max(high - lo, timedelta(microseconds=1))
            needed = seen * ((limit - counted) / counted) * _SLICE_SLACK
            width = min(max(needed, covered / _SLICE_GROWTH), covered * _SLICE_GROWTH)
        hi = lo
    if low is None or high is None:
        return _Total(0, None)
    return _Total(counted, (datetime_to_us(low), datetime_to_us(high)))


__all__ = ["query_events"]
