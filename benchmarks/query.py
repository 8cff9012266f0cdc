"""Feed query latency (SPEC §11): p50/p95 of feed pages and counts through ``EventReader`` — the
code path the HTTP and gRPC servers and the CLI use — on stores of 1M and 10M events.

    .venv/bin/python benchmarks/query.py                     # 1M and 10M (about 3 minutes)
    .venv/bin/python benchmarks/query.py --events 1000000    # one size

Each store is a temp DuckDB file created by ``EventStore`` (so the real schema and migrations),
filled by DuckDB SQL alone — ``INSERT … SELECT`` over a table of row numbers, with hash-derived
values that build the JSON text the way ingest writes it (compact, as orjson does) — in
``occurred`` order (as ingest appends), over the 7 days before now:

* names ``app.<service>.<verb>`` (60%; 12 services × 8 verbs), ``otel.span.ok`` (35%),
  ``otel.span.error`` (5%);
* resources: 1,000 per app service, 20 instances per OTel service; each has 3–6 labels that
  follow from it (id, region, env; name, version — which changes daily —, team,
  ``service.instance.id``), or drawn anew for every event with ``--labels-per-event``;
* 0–5 related resources in roles customer/tenant/deployment/flow/tag/trace;
* a small payload, ``"status":"timeout"`` in ~1% of events.

Every scenario runs twice to warm up, then up to ``--runs`` times (fewer once ``--budget``
seconds are spent on it, at least 5); the store files are deleted at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.clock import SystemClock
from collector.config import QueryConfig
from collector.domain.events import datetime_to_us
from collector.domain.filters import parse_filter
from collector.store.duckdb_store import EventStore
from collector.store.reader import EventReader
from collector.store.schema import RELATED_ID_KEYS_SQL, RELATED_ITEMS_SQL, RELATED_PAIR_KEYS_SQL

SERVICES = [
    "checkout", "payments", "inventory", "shipping", "search", "auth",
    "billing", "catalog", "cart", "email", "users", "reports",
]
VERBS = ["created", "updated", "shipped", "failed", "retried", "completed", "started", "deleted"]
REGIONS = ["eu", "us", "ap", "sa"]
ENVS = ["prod", "prod", "staging", "dev"]
TEAMS = ["core", "growth", "infra", "data", "web"]
# Related roles and how many distinct ids each has.
ROLES = {
    "customer": 5000, "tenant": 50, "deployment": 200,
    "flow": 100, "tag": 30, "trace": 1_000_000_000,
}
STATUSES = ["ok"] * 97 + ["error"] * 2 + ["timeout"]
SPAN = timedelta(days=7)
CHUNK = 1_000_000
PAGE = 50

FEED_FILTER = {"event": {"prefix": ["app.checkout."]}, "resource": {"labels": {"region": "eu"}}}
RELATED_FILTER = {"related": {"role": ["tenant"], "id": ["app.tenant.7"]}}
TEXT_FILTER = {"text": {"query": "timeout"}}
# A term no event holds: the whole store is read whatever the total's limit.
TEXT_NONE_FILTER = {"text": {"query": "zzz-none"}}
# Page number (1-based) reached through tokens for the "later page" scenario.
LATER_PAGE = 5

TARGETS = {
    ("feed page", 1_000_000): "p50 <= 50 ms",
    ("feed page", 10_000_000): "p50 <= 200 ms",
    ("count by time", 10_000_000): "p50 <= 300 ms",
    ("text page", 1_000_000): "p50 <= 100 ms",
    ("text page", 10_000_000): "p50 <= 500 ms",
}


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v + "'" for v in values) + "]"


def _pick(values: list[str], h: str) -> str:
    # A list element chosen by a hash expression (DuckDB lists are 1-based).
    return f"{_sql_list(values)}[({h} % {len(values)})::BIGINT + 1]"


def _related_json(count: str) -> str:
    """The related JSON text: ``count`` (0–5) items, each a role and an id of that role.

    Five positional scalar expressions joined by ``concat_ws`` (which skips NULLs), faster
    to generate than a ``list_transform`` lambda over ``range(count)``."""
    roles = list(ROLES)
    # A typed list literal is folded to a constant; an untyped one is rebuilt for every row
    # (25x slower here).
    sizes = [f"{n}::UBIGINT" for n in ROLES.values()]
    items = []
    for k in range(5):
        r = f"(hash((i * 8 + {k}) * 16 + 7) % {len(roles)})::BIGINT + 1"
        role = f"{_sql_list(roles)}[{r}]"
        ident = f"(hash((i * 8 + {k}) * 16 + 8) % [{', '.join(sizes)}][{r}])::VARCHAR"
        items.append(
            f"""CASE WHEN {count} > {k} THEN '{{"prefect.resource.id":"app.' || {role} || '.' """
            f"""|| {ident} || '","prefect.resource.role":"' || {role} || '"}}' END"""
        )
    return "'[' || concat_ws(',', " + ", ".join(items) + ") || ']'"


def insert_sql(*, labels_per_event: bool = False) -> str:
    """One chunk: events ``i`` in ``[$lo, $hi)`` of ``$n``, the last occurring at ``$end_us``."""
    related = _related_json("h3 % 6")
    span_us = SPAN // timedelta(microseconds=1)
    if labels_per_event:
        labels_note = "(unless --labels-per-event: drawn anew for every event)."
        label_hash = "h4"
    else:
        labels_note = "(the version changes daily)."
        label_hash = "hash(res_key * 16 + 9)"
    return f"""
    INSERT INTO events (id, occurred, received, event, resource_id, resource, related, payload,
                        follows, resource_key, related_id_keys, related_pair_keys)
    WITH h AS (
        -- hash() of one integer is well mixed; hash(a, b) combines linearly, so its values
        -- for different b are correlated: every hash here gets a distinct single integer.
        SELECT i, hash(i * 16 + 1) AS h1, hash(i * 16 + 2) AS h2, hash(i * 16 + 3) AS h3,
               hash(i * 16 + 4) AS h4, hash(i * 16 + 5) AS h5,
               $n::BIGINT AS n, $end_us::BIGINT AS end_us
        FROM seq WHERE i >= $lo AND i < $hi
    ), v AS (
        SELECT *,
            (h1 // 100 % {len(SERVICES)})::BIGINT AS svc_i,
            CASE WHEN h1 % 100 < 60 THEN 'app' WHEN h1 % 100 < 95 THEN 'ok' ELSE 'error' END
                AS kind,
            end_us - {span_us} + i * {span_us} // n AS at_us
        FROM h
    ), w AS (
        SELECT *,
            {_sql_list(SERVICES)}[svc_i + 1] AS svc,
            -- The resource: one of 1,000 per app service, one per OTel service instance.
            CASE kind WHEN 'app' THEN svc_i * 1000 + (h2 % 1000)::BIGINT
                      ELSE 100000 + svc_i * 100 + (h2 % 20)::BIGINT END AS res_key
        FROM v
    ), x AS (
        SELECT *,
            CASE kind WHEN 'app' THEN 'app.' || svc || '.' || {_pick(VERBS, "h2 // 7")}
                      ELSE 'otel.span.' || kind END AS name,
            CASE kind WHEN 'app' THEN 'app.' || svc || '.' || (res_key % 1000)::VARCHAR
                      ELSE 'otel.service.' || svc END AS rid,
            -- Labels describe the resource, so they follow from it {labels_note}
            {label_hash} AS hr
        FROM w
    )
    , e AS (
    SELECT
        gen_random_uuid() AS id,
        make_timestamp(at_us - (h5 % 5000000)::BIGINT) AS occurred,  -- up to 5 s late
        make_timestamp(at_us) AS received,
        name AS event,
        rid AS resource_id,
        ('{{"prefect.resource.id":"' || rid || '"'
         || CASE WHEN kind = 'app' AND hr % 2 = 0 THEN ',"prefect.resource.name":"' || svc || '-'
                 || (res_key % 1000)::VARCHAR || '"' ELSE '' END
         || ',"region":"' || {_pick(REGIONS, "hr // 3")} || '"'
         || ',"env":"' || {_pick(ENVS, "hr // 17")} || '"'
         || CASE WHEN kind <> 'app' THEN ',"service.instance.id":"i-' || (res_key % 100)::VARCHAR
                 || '"' ELSE '' END
         || CASE WHEN hr % 5 < 3 THEN ',"version":"1.' || ((hr // 23 + at_us // 86400000000)
                 % 40)::VARCHAR || '"' ELSE '' END
         || CASE WHEN hr % 7 < 3 THEN ',"team":"' || {_pick(TEAMS, "hr // 29")} || '"'
                 ELSE '' END
         || '}}')::JSON AS resource,
        ({related})::JSON AS related,
        ('{{"amount":' || (h5 // 7 % 10000)::VARCHAR || ',"currency":"EUR","status":"'
         || {_pick(STATUSES, "h5 // 11")} || '","duration_ms":'
         || (h5 // 13 % 5000)::VARCHAR || '}}')::JSON AS payload
    FROM x
    )
    -- The filters' keys as the writer's INSERT computes them (duckdb_store.INSERT_SQL).
    SELECT id, occurred, received, event, resource_id, resource, related, payload, NULL,
           hash(resource::VARCHAR), {RELATED_ID_KEYS_SQL}, {RELATED_PAIR_KEYS_SQL}
    FROM (SELECT *, {RELATED_ITEMS_SQL} AS items FROM e)
    """


def build_store(path: Path, n: int, end: datetime, *, labels_per_event: bool = False) -> float:
    """Fill a new store at ``path`` with ``n`` events; returns the seconds it took."""
    t0 = time.perf_counter()
    store = EventStore(path)
    cur = store.cursor()
    sql = insert_sql(labels_per_event=labels_per_event)
    try:
        # A table source is scanned in parallel; range() is not (4.6 s vs 9.9 s per 1M here).
        cur.execute("CREATE TEMP TABLE seq AS SELECT range AS i FROM range(?)", [n])
        for lo in range(0, n, CHUNK):
            cur.execute(
                sql, {"lo": lo, "hi": min(n, lo + CHUNK), "n": n, "end_us": datetime_to_us(end)}
            )
        cur.execute("DROP TABLE seq")
        # The label-set table (the writer adds the sets of each commit; here all at once).
        cur.execute(
            "INSERT INTO herald_label_sets SELECT DISTINCT ON (resource_key) resource_key, "
            "resource, now() FROM events"
        )
        cur.execute("CHECKPOINT")
    finally:
        cur.close()
        store.close()
    return time.perf_counter() - t0


def measure(fn: Callable[[], Any], runs: int, warmup: int, budget: float) -> list[float]:
    """Milliseconds per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 5 and time.perf_counter() - started > budget:
            break
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_size(
    n: int, directory: Path, args: argparse.Namespace
) -> list[tuple[str, int, str, list[float]]]:
    path = directory / f"events-{n}.duckdb"
    end = datetime.now(UTC) - timedelta(minutes=1)
    seconds = build_store(path, n, end, labels_per_event=args.labels_per_event)
    size_mb = path.stat().st_size / 1e6
    print(f"built {n:,} events in {seconds:.1f} s ({size_mb:,.0f} MB)", flush=True)
    try:
        return measure_store(path, n, end, args)
    finally:
        path.unlink(missing_ok=True)
        Path(str(path) + ".wal").unlink(missing_ok=True)


def measure_store(
    path: Path, n: int, end: datetime, args: argparse.Namespace
) -> list[tuple[str, int, str, list[float]]]:
    """Every scenario on the store at ``path`` (``n`` events built to end at ``end``); reads
    ``args.runs``, ``args.warmup`` and ``args.budget``. Rows: scenario, n, what, ms per run."""
    store = EventStore(path)
    reader = EventReader(store, QueryConfig(), clock=SystemClock())
    # The text search's total counted exactly (query.text_total_limit = 0): every row read.
    exact = EventReader(store, QueryConfig(text_total_limit=0), clock=SystemClock())
    rows: list[tuple[str, int, str, list[float]]] = []
    try:
        feed = parse_filter(FEED_FILTER)
        first = reader.query(feed, PAGE)
        token = first.next_page
        for _ in range(LATER_PAGE - 2):
            assert token is not None
            token = reader.query(None, page_token=token).next_page
        assert token is not None, "too few matches for the later-page scenario"
        later = token
        since = (end - SPAN).isoformat()
        week = parse_filter({"occurred": {"since": since, "until": end.isoformat()}})

        scenarios: list[tuple[str, str, Callable[[], Any]]] = [
            ("feed page", "prefix + label, page 1 of 50 (with total)",
             lambda: reader.query(feed, PAGE)),
            (f"later page {LATER_PAGE}", "same filter, via the page token",
             lambda: reader.query(None, page_token=later)),
            ("related page", "related tenant role + id, page 1",
             lambda: reader.query(parse_filter(RELATED_FILTER), PAGE)),
            ("text page", "text 'timeout', page 1 (total exact up to 1,000)",
             lambda: reader.query(parse_filter(TEXT_FILTER), PAGE)),
            ("text exact", "text 'timeout', page 1, exact total (text_total_limit 0)",
             lambda: exact.query(parse_filter(TEXT_FILTER), PAGE)),
            ("text no match", "text 'zzz-none': nothing matches, every row read",
             lambda: reader.query(parse_filter(TEXT_NONE_FILTER), PAGE)),
            ("count by time", "hour buckets over 7 days (168)",
             lambda: reader.count(week, "time", "hour", 1)),
        ]
        for name, what, fn in scenarios:
            result = fn()
            if isinstance(result, list):
                matched = f"{sum(c.count for c in result):,}"
            else:
                matched = f"{result.total:,}{'+' if result.total_is_lower_bound else ''}"
            times = measure(fn, args.runs, args.warmup, args.budget)
            rows.append((name, n, f"{what}; {matched} matches", times))
            print(
                f"  {name:<14} p50 {percentile(times, 0.5):8.1f} ms  "
                f"p95 {percentile(times, 0.95):8.1f} ms  (n={len(times)})",
                flush=True,
            )
    finally:
        store.close()
    return rows


def machine() -> str:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    except OSError:
        pass
    return (
        f"nproc {len(os.sched_getaffinity(0))}, RAM {mem_kb / 1024 / 1024:.1f} GiB, {model}; "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000],
                    help="store sizes to build and measure (default: 1M and 10M)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per scenario")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    ap.add_argument("--budget", type=float, default=45.0,
                    help="seconds per scenario after which it stops (at least 5 runs)")
    ap.add_argument("--labels-per-event", action="store_true",
                    help="draw resource labels anew for every event (worst case for label "
                    "filters) instead of deriving them from the resource")
    ap.add_argument("--dir", type=Path, default=None, help="where the temp stores go")
    args = ap.parse_args()

    command = ".venv/bin/python benchmarks/query.py " + shlex.join(sys.argv[1:])
    print(f"command: {command.strip()}")
    print(f"machine: {machine()}")
    # Other work on the machine skews every number: say how busy it was.
    print(f"{load()} at the start")
    t0 = time.perf_counter()
    rows: list[tuple[str, int, str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="herald-query-bench-", dir=args.dir) as tmp:
        for n in args.events:
            rows += run_size(n, Path(tmp), args)

    print()
    print(f"| {'events':>10} | {'scenario':<14} | {'p50 ms':>8} | {'p95 ms':>8} | {'runs':>4} "
          f"| {'target':<14} | what")
    print(f"|{'-' * 12}|{'-' * 16}|{'-' * 10}|{'-' * 10}|{'-' * 6}|{'-' * 16}|------")
    for name, n, what, times in rows:
        target = TARGETS.get((name, n), "")
        print(
            f"| {n:>10,} | {name:<14} | {percentile(times, 0.5):>8.1f} | "
            f"{percentile(times, 0.95):>8.1f} | {len(times):>4} | {target:<14} | {what}"
        )
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; {load()} at the end")


if __name__ == "__main__":
    main()
