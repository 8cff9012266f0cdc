"""DuckLake backend (issue 12, item 5): ingest with 1, 2 and 3 collectors on one lake against
the single-file rate; feed page and count-by-time p50 on a lake of 1M (10M) events before and
after compaction, against the single file; data files and catalog rows per million events.

    .venv/bin/python benchmarks/ducklake.py ingest --collectors 1 2 3 --seconds 20
    .venv/bin/python benchmarks/ducklake.py query --events 1000000
    .venv/bin/python benchmarks/ducklake.py commit --stores 1 3

``ingest``: a real PostgreSQL 15 (``collector.testing.postgres_server``, fsync on) holds the
catalog; each collector is a ``herald serve`` process on it with its own ports; the clients of
``benchmarks/ingest_native.py`` (4 processes, 1,000-event ``Emit`` batches) are spread over the
collectors, as a load balancer would. The single-file run is the same load on one
``herald serve`` with a DuckDB file. After each run the servers get SIGTERM and the lake's
events are counted: every acknowledged event must be there.

``query``: the synthetic store of ``benchmarks/query.py`` (same events, same filters) is built
as a DuckDB file, measured, then copied into a lake with ``herald store migrate``'s code in
commits of ``--commit-rows`` events (what group commits leave behind: one Parquet file each),
measured, compacted with the leader's upkeep jobs, and measured again.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._server import ServerProcess
from benchmarks.ingest_native import run_clients
from benchmarks.query import (
    FEED_FILTER,
    LATER_PAGE,
    PAGE,
    SPAN,
    build_store,
    load,
    machine,
    measure,
    percentile,
)
from collector.clock import SystemClock
from collector.config import QueryConfig
from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.filters import parse_filter
from collector.domain.ids import uuid7_str
from collector.store.duckdb_store import EventStore, columns_to_arrow, insert_statement
from collector.store.lake.lake_store import LAKE, LakeLocation, LakeStore
from collector.store.lake.migrate import migrate_to_lake
from collector.store.lake.upkeep import LakeUpkeep
from collector.store.reader import EventReader
from collector.testing import PostgresServer, postgres_server


def lake_env(pg: PostgresServer, dbname: str, data: Path) -> dict[str, str]:
    return {
        "HERALD_STORAGE__BACKEND": "ducklake",
        "HERALD_STORAGE__CATALOG": pg.catalog(dbname),
        "HERALD_STORAGE__DATA_PATH": str(data),
        "HERALD_AUTOMATIONS__ENABLED": "false",
    }


def run_load(addresses: list[str], clients: int, seconds: float, batch: int) -> tuple[int, float]:
    """``clients`` processes, round-robin over ``addresses``; (acknowledged, elapsed s)."""
    run = run_clients(addresses, clients, seconds, batch)
    return run.acked, run.elapsed


def ingest(args: argparse.Namespace) -> None:
    rows: list[tuple[str, int, float, int]] = []
    single = ServerProcess(env={"HERALD_AUTOMATIONS__ENABLED": "false"})
    try:
        acked, elapsed = run_load([single.grpc], args.clients, args.seconds, args.batch)
        single.stop()
        stored = single.count_events()
    finally:
        single.cleanup()
    rows.append(("single file", 1, acked / elapsed, stored - acked))
    print(f"single file: {acked / elapsed:,.0f} events/s", flush=True)
    with (
        postgres_server(durable=True) as pg,
        tempfile.TemporaryDirectory(prefix="herald-lake-") as tmp,
    ):
        for n in args.collectors:
            dbname = pg.create_database()
            data = Path(tmp) / f"lake-{n}"
            env = lake_env(pg, dbname, data)
            servers = [ServerProcess(env=env) for _ in range(n)]
            try:
                acked, elapsed = run_load(
                    [s.grpc for s in servers], args.clients, args.seconds, args.batch
                )
                for s in servers:
                    s.stop()
            finally:
                for s in servers:
                    s.cleanup()
            lake = LakeStore(LakeLocation.parse(pg.catalog(dbname), str(data)))
            try:
                stored = lake.count_events()
                files = LakeUpkeep(lake, timedelta(0)).stats().data_files
            finally:
                lake.close()
            rows.append((f"lake, {n} collector{'s' * (n > 1)}", n, acked / elapsed, stored - acked))
            print(
                f"lake x{n}: {acked / elapsed:,.0f} events/s, {stored:,} stored, {files} files",
                flush=True,
            )
    base = rows[0][2]
    print()
    print("| store | collectors | events/s acknowledged | vs single file | stored − acked |")
    print("|---|---|---|---|---|")
    for name, n, rate, extra in rows:
        print(f"| {name} | {n} | {rate:,.0f} | {rate / base:.0%} | {extra} |")
        if extra < 0:
            print("ERROR: acknowledged events are missing from the store")
            sys.exit(1)


def commit_phases(args: argparse.Namespace) -> None:
    """The commit lock's critical section, phase by phase, for ``--batch``-event commits made
    in turn by ``--stores`` in-process stores (each commit follows another store's when > 1)."""
    with postgres_server(durable=True) as pg, tempfile.TemporaryDirectory() as tmp:
        location = LakeLocation.parse(pg.catalog(pg.create_database()), tmp + "/lake")
        for n in args.stores:
            stores = [LakeStore(location) for _ in range(n)]
            phases: dict[str, list[float]] = {p: [] for p in ("lock", "begin", "insert", "commit")}
            try:
                for k in range(args.commits):
                    store = stores[k % n]
                    cols = EventColumns()
                    now = datetime_to_us(datetime.now(UTC))
                    for i in range(args.batch):
                        cols.append(
                            uuid7_str(),
                            now + i,
                            "bench.commit",
                            {"prefect.resource.id": f"svc.{i % 7}"},
                            [],
                            '{"n": 1}',
                        )
                    batch = columns_to_arrow(cols, [now] * args.batch)
                    sql = insert_statement(batch)
                    t = time.perf_counter()
                    with store._commit_lock():  # the same steps as LakeStore._insert, timed
                        phases["lock"].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        cur = store.cursor()
                        cur.register("batch", batch)
                        cur.execute("BEGIN")
                        cur.execute(f"CALL {LAKE}.set_commit_message(?, 'ingest')", ["bench"])
                        phases["begin"].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        cur.execute(sql).fetchone()
                        phases["insert"].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        cur.execute("COMMIT")
                        phases["commit"].append(time.perf_counter() - t)
                        cur.close()
            finally:
                for store in stores:
                    store.close()
            p50 = {p: percentile([x * 1000 for x in v], 0.5) for p, v in phases.items()}
            total = sum(p50.values())
            print(
                f"| {n} | {args.batch:,} | "
                + " | ".join(f"{p50[p]:.1f}" for p in phases)
                + f" | {total:.0f} | {args.batch / total * 1000:,.0f} |",
                flush=True,
            )


Scenario = tuple[str, Callable[[], Any]]


def scenarios(reader: EventReader, end: datetime) -> list[Scenario]:
    feed = parse_filter(FEED_FILTER)
    token = reader.query(feed, PAGE).next_page
    for _ in range(LATER_PAGE - 2):
        assert token is not None
        token = reader.query(None, page_token=token).next_page
    later = token
    week = parse_filter({"occurred": {"since": (end - SPAN).isoformat(), "until": end.isoformat()}})
    return [
        ("feed page", lambda: reader.query(feed, PAGE)),
        (f"later page {LATER_PAGE}", lambda: reader.query(None, page_token=later)),
        ("count by time", lambda: reader.count(week, "time", "hour", 1)),
    ]


def measure_reader(
    label: str, reader: EventReader, end: datetime, args: argparse.Namespace
) -> list[tuple[str, str, float, float, int]]:
    out = []
    for name, fn in scenarios(reader, end):
        times = measure(fn, args.runs, args.warmup, args.budget)
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        out.append((label, name, p50, p95, len(times)))
        print(f"  {label:<26} {name:<14} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms", flush=True)
    return out


def catalog_rows(pg: PostgresServer, dbname: str) -> int:
    tables = pg.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename LIKE 'ducklake%'",
        dbname,
    ).split()
    sql = " UNION ALL ".join(f"SELECT count(*) FROM {t}" for t in tables)
    return sum(int(x) for x in pg.psql(sql, dbname).split())


def query(args: argparse.Namespace) -> None:
    results: list[tuple[int, str, str, float, float, int]] = []
    sizes: list[tuple[int, str, int, int, int]] = []
    with (
        postgres_server(durable=True) as pg,
        tempfile.TemporaryDirectory(prefix="herald-lakeq-") as tmp,
    ):
        for n in args.events:
            path = Path(tmp) / f"events-{n}.duckdb"
            end = datetime.now(UTC) - timedelta(minutes=1)
            print(f"building {n:,} events: {build_store(path, n, end):.0f} s", flush=True)
            store = EventStore(path)
            try:
                reader = EventReader(store, QueryConfig(), clock=SystemClock())
                for row in measure_reader("single file", reader, end, args):
                    results.append((n, *row))
            finally:
                store.close()
            dbname = pg.create_database()
            location = LakeLocation.parse(pg.catalog(dbname), str(Path(tmp) / f"lake-{n}"))
            t0 = time.perf_counter()
            migrate_to_lake(path, location, chunk_rows=args.commit_rows)
            print(f"  copied into the lake in {time.perf_counter() - t0:.0f} s", flush=True)
            path.unlink()
            lake = LakeStore(location)
            try:
                upkeep = LakeUpkeep(lake, timedelta(0))
                before = upkeep.stats()
                sizes.append((n, "before", before.data_files, catalog_rows(pg, dbname), 0))
                reader = EventReader(lake, QueryConfig(), clock=SystemClock())
                label = f"lake, {args.commit_rows:,}-event commits"
                for row in measure_reader(label, reader, end, args):
                    results.append((n, *row))
                t0 = time.perf_counter()
                report = upkeep.run(datetime.now(UTC) + timedelta(seconds=1))
                took = time.perf_counter() - t0
                assert not report.errors, report.errors
                after = upkeep.stats()
                sizes.append((n, "after", after.data_files, catalog_rows(pg, dbname), int(took)))
                print(f"  upkeep {took:.0f} s: {report.seconds}", flush=True)
                for row in measure_reader("lake, compacted", reader, end, args):
                    results.append((n, *row))
            finally:
                lake.close()
    print()
    print("| events | store | scenario | p50 ms | p95 ms | runs |")
    print("|---|---|---|---|---|---|")
    for n, label, name, p50, p95, runs in results:
        print(f"| {n:,} | {label} | {name} | {p50:.1f} | {p95:.1f} | {runs} |")
    print()
    print("| events | compaction | data files | catalog rows | per 1M: files / rows | upkeep s |")
    print("|---|---|---|---|---|---|")
    for n, when, files, catalog, took in sizes:
        per = 1_000_000 / n
        print(
            f"| {n:,} | {when} | {files:,} | {catalog:,} | "
            f"{files * per:,.0f} / {catalog * per:,.0f} | {took if when == 'after' else ''} |"
        )


# What the follower read before (issue 12 follow-up): DuckLake's change feed, which misses a
# merged file's rows when the range starts after the file's first snapshot. Kept here to
# compare costs.
CHANGE_FEED_SQL = (
    "SELECT snapshot_id, id::VARCHAR, epoch_us(occurred), epoch_us(received), event, "
    "resource_id, resource::VARCHAR, related::VARCHAR, payload::VARCHAR, follows::VARCHAR "
    f"FROM ducklake_table_changes('{LAKE}', 'main', 'events', ?, ?) "
    "WHERE change_type = 'insert' ORDER BY snapshot_id, rowid"
)


def follow(args: argparse.Namespace) -> None:
    """A follower's read of the newest ``--read`` commits of another collector, on a lake of
    ``--commits`` commits of ``--batch`` events: ``LakeStore.inserts_by_others`` (the change
    feed, or the rows by ``snapshot_id`` after a compaction) against DuckLake's change feed
    alone, before and after compaction."""
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        location = LakeLocation.parse(pg.catalog(pg.create_database()), str(Path(tmp) / "lake"))
        reader, writer = LakeStore(location), LakeStore(location)
        upkeep = LakeUpkeep(reader, keep=timedelta(hours=1))
        now = datetime.now(UTC)

        def commit() -> None:
            cols = EventColumns()
            for i in range(args.batch):
                cols.append(
                    uuid7_str(),
                    datetime_to_us(now),
                    "bench.follow",
                    {"prefect.resource.id": f"r{i}"},
                    [],
                    "{}",
                )
            writer.append(columns_to_arrow(cols, [datetime_to_us(now)] * args.batch))

        for _ in range(args.commits - args.read):
            commit()

        def timed(label: str, after: int) -> None:
            """Read what was committed after snapshot ``after``, ``args.runs`` times."""
            newest = reader.current_snapshot()
            ours: list[float] = []
            feed: list[float] = []
            got = seen = 0
            for _ in range(args.runs):
                started = time.perf_counter()
                got = sum(len(c) for c, _ in reader.inserts_by_others(after, newest))
                ours.append((time.perf_counter() - started) * 1000)
                cur = reader.cursor()
                started = time.perf_counter()
                seen = len(cur.execute(CHANGE_FEED_SQL, [after + 1, newest]).fetchall())
                feed.append((time.perf_counter() - started) * 1000)
                cur.close()
            stats = upkeep.stats()
            print(
                f"| {label} | {stats.data_files} | {got:,} | {percentile(ours, 0.5):.1f} "
                f"| {seen:,} | {percentile(feed, 0.5):.1f} |",
                flush=True,
            )

        def read_next(label: str, merge_after: bool) -> None:
            after = reader.current_snapshot()
            for _ in range(args.read):
                commit()
            if merge_after:  # the follower's range starts after the merged file's first row
                upkeep.merge_files()
            timed(label, after)

        print(
            "| lake | data files | inserts_by_others: rows | p50 ms "
            "| change feed alone: rows | p50 ms |"
        )
        print("|---|---|---|---|---|---|")
        read_next(f"{args.commits} commits, not merged", merge_after=False)
        upkeep.merge_files()
        read_next(f"merged, then {args.read} commits", merge_after=False)
        read_next(f"{args.read} more commits, all merged", merge_after=True)
        reader.close()
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    ing = sub.add_parser("ingest", help="events/s with 1..N collectors vs the single file")
    ing.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 3])
    ing.add_argument("--clients", type=int, default=4)
    ing.add_argument("--seconds", type=float, default=20)
    ing.add_argument("--batch", type=int, default=1000)
    q = sub.add_parser("query", help="feed and count latency, files and catalog rows")
    q.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    q.add_argument(
        "--commit-rows",
        type=int,
        default=5_000,
        help="events per lake commit when filling the lake (one file each)",
    )
    q.add_argument("--runs", type=int, default=20)
    q.add_argument("--warmup", type=int, default=2)
    q.add_argument("--budget", type=float, default=30.0)
    c = sub.add_parser("commit", help="the commit lock's critical section, phase by phase")
    c.add_argument("--stores", type=int, nargs="+", default=[1, 3])
    c.add_argument("--batch", type=int, default=2000)
    c.add_argument("--commits", type=int, default=40)
    f = sub.add_parser("follow", help="a follower's read of new commits, before/after merging")
    f.add_argument("--commits", type=int, default=1000)
    f.add_argument("--batch", type=int, default=1000)
    f.add_argument("--read", type=int, default=2, help="commits the follower reads at a time")
    f.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print("command: .venv/bin/python benchmarks/ducklake.py " + shlex.join(sys.argv[1:]))
    print(f"machine: {machine()}")
    print(f"{load()} at the start", flush=True)
    t0 = time.perf_counter()
    if args.what == "ingest":
        ingest(args)
    elif args.what == "follow":
        follow(args)
    elif args.what == "commit":
        print(
            "| stores taking turns | events/commit | lock p50 ms | begin | insert | commit "
            "| total | events/s in the lock |"
        )
        print("|---|---|---|---|---|---|---|---|")
        commit_phases(args)
    else:
        query(args)
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; {load()} at the end")


if __name__ == "__main__":
    main()
