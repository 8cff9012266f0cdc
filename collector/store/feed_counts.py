"""Count-by over the DuckDB store (P§4.7): one row per event name, per primary resource (with
its latest display name) or per time bucket, as ``collector.domain.feed``'s rules say.

Owns the counting SQL. Takes a DuckDB cursor and an ``EventFilter``; never reads the clock
(``now`` is passed in).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from collector.domain.events import RESOURCE_NAME, to_utc
from collector.domain.feed import (
    PIVOT,
    PIVOT_US,
    Countable,
    CountResult,
    EventCount,
    TimeUnit,
    interval_value,
    parse_enum,
    time_buckets,
)
from collector.domain.filters import EventFilter
from collector.errors import InvalidFilter
from collector.store.filter_sql import filter_sql, label_sql


def count_events(
    cur: duckdb.DuckDBPyConnection,
    filter: EventFilter | None,
    countable: Countable | str,
    time_unit: TimeUnit | str = TimeUnit.DAY,
    time_interval: object = 1.0,
    *,
    now: datetime,
) -> list[EventCount]:
    """Prefect's ``POST /events/count-by/{countable}`` (P§4.7).

    * ``event``: one row per event name; ``resource``: one per primary resource id, labelled
      with its most recent ``prefect.resource.name`` (then ``prefect.name``, then the id).
      Both ordered by count desc, then label; ``start_time``/``end_time`` = first/last occurred.
    * ``time`` (``day`` = day × 1): zero-filled buckets aligned to 2024-04-01T00:00:00Z, ordered
      by time; ``value`` is the bucket's index in the response, ``label`` its ISO start.
    """
    return count_groups(cur, filter, countable, time_unit, time_interval, now=now).counts


def count_groups(
    cur: duckdb.DuckDBPyConnection,
    filter: EventFilter | None,
    countable: Countable | str,
    time_unit: TimeUnit | str = TimeUnit.DAY,
    time_interval: object = 1.0,
    *,
    now: datetime,
    limit: int | None = None,
) -> CountResult:
    """``count_events``, keeping only the first ``limit`` rows of an ``event`` or ``resource``
    count (the largest counts; the same rows, in the same order, as the head of the whole
    answer). Time buckets are a series and are never cut. ``limit`` None or 0: every row.
    """
    countable = parse_enum(Countable, countable, "countable")
    unit = parse_enum(TimeUnit, time_unit, "time_unit")
    # Validated for every countable, as Prefect validates the body field whatever it counts.
    interval = interval_value(time_interval)
    if limit is not None and limit < 0:
        raise InvalidFilter(f"limit: must be 0 (no limit) or more, got {limit}")
    resolved = (filter or EventFilter()).resolve(now)
    where, params = filter_sql(resolved)
    if countable in (Countable.DAY, Countable.TIME):
        if countable is Countable.DAY:
            unit, interval = TimeUnit.DAY, 1.0
        buckets = _count_by_time(cur, resolved, where, params, unit, interval, now)
        return CountResult(buckets, len(buckets))
    if countable is Countable.EVENT:
        sql = (
            "SELECT e.event AS value, e.event AS label, count(*) AS n, min(e.occurred), "
            "max(e.occurred), count(*) OVER () AS groups "
            f"FROM events e WHERE {where} GROUP BY e.event "
            "ORDER BY n DESC, label ASC, value ASC"
        )
        if limit:
            sql += " LIMIT ?"
            params = [*params, limit]
    elif limit:
        sql, params = _top_resources_sql(where, params, limit)
    else:
        # The label is the resource's most recent display name (Prefect's coalesce). Measured
        # on 1M events / 1,000 resources: keeping the latest label set per resource and
        # reading the name from it once is 3x faster than reading it on every row (26 vs 88 ms).
        name, name_params = label_sql("latest", RESOURCE_NAME)
        alt, alt_params = label_sql("latest", "prefect.name")
        sql = (
            f"SELECT value, coalesce({name}, {alt}, value) AS label, n, first_at, last_at, "
            "count(*) OVER () AS groups FROM ("
            f"SELECT e.resource_id AS value, arg_max(e.resource, e.occurred) AS latest, "
            f"count(*) AS n, "
            f"min(e.occurred) AS first_at, max(e.occurred) AS last_at "
            f"FROM events e WHERE {where} GROUP BY e.resource_id"
            f") ORDER BY n DESC, label ASC, value ASC"
        )
        # The name lookups come before the filter's placeholders in the text.
        params = [*name_params, *alt_params, *params]
    rows = cur.execute(sql, params).fetchall()
    counts = [
        EventCount(
            value=row[0],
            label=row[1],
            count=int(row[2]),
            start_time=to_utc(row[3]),
            end_time=to_utc(row[4]),
        )
        for row in rows
    ]
    return CountResult(counts, int(rows[0][5]) if rows else 0)


def _top_resources_sql(where: str, params: list[Any], limit: int) -> tuple[str, list[Any]]:
    """The top ``limit`` resources by count, labelled as in the full answer.

    Reading the latest label set (``arg_max`` of the JSON) is most of a resource count's cost
    and the whole answer needs it for every resource; the top needs it only for the resources
    whose count reaches the ``limit``-th largest (ties included, as the label breaks them), so
    it is read in a second pass over those alone.
    """
    name, name_params = label_sql("latest", RESOURCE_NAME)
    alt, alt_params = label_sql("latest", "prefect.name")
    sql = (
        "WITH g AS ("
        "SELECT e.resource_id AS value, count(*) AS n, min(e.occurred) AS first_at, "
        f"max(e.occurred) AS last_at FROM events e WHERE {where} GROUP BY e.resource_id), "
        "cut AS (SELECT coalesce(min(n), 0) AS n FROM "
        "(SELECT n FROM g ORDER BY n DESC LIMIT ?)), "
        "top AS (SELECT g.* FROM g, cut WHERE g.n >= cut.n), "
        "latest AS ("
        "SELECT e.resource_id AS value, arg_max(e.resource, e.occurred) AS latest "
        f"FROM events e WHERE ({where}) AND e.resource_id IN (SELECT value FROM top) "
        "GROUP BY e.resource_id) "
        f"SELECT top.value, coalesce({name}, {alt}, top.value) AS label, top.n, top.first_at, "
        "top.last_at, (SELECT count(*) FROM g) AS groups "
        "FROM top JOIN latest ON latest.value = top.value "
        "ORDER BY top.n DESC, label ASC, top.value ASC LIMIT ?"
    )
    # Placeholders in text order: the first filter, the cut, the second filter, the names.
    return sql, [*params, limit, *params, *name_params, *alt_params, limit]


def _count_by_time(
    cur: duckdb.DuckDBPyConnection,
    resolved: EventFilter,
    where: str,
    params: list[Any],
    unit: TimeUnit,
    interval: float,
    now: datetime,
) -> list[EventCount]:
    since, until = resolved.occurred.since, resolved.occurred.until
    assert since is not None and until is not None
    first, delta, n = time_buckets(since, until, unit, interval, now)
    delta_us = delta // timedelta(microseconds=1)
    base_us = PIVOT_US + first * delta_us
    counts = [0] * n
    if n:
        # Indexes relative to the first bucket are never negative (occurred >= since >= its
        # start), so DuckDB's truncating integer division is a floor here.
        sql = (
            f"SELECT (epoch_us(e.occurred) - ?) // ? AS k, count(*) FROM events e "
            f"WHERE {where} GROUP BY k"
        )
        for k, c in cur.execute(sql, [base_us, delta_us, *params]).fetchall():
            # Events after `now` (allowed by a future `until`) fall in cut future buckets.
            if 0 <= k < n:
                counts[int(k)] = int(c)
    out = []
    for i in range(n):
        start = PIVOT + (first + i) * delta
        out.append(
            EventCount(
                value=str(i),
                label=start.isoformat(),
                count=counts[i],
                start_time=start,
                end_time=start + delta - timedelta(microseconds=1),
            )
        )
    return out


__all__ = ["count_events", "count_groups"]
