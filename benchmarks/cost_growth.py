"""How Herald's costs grow (issue 13, item 4): native ingest throughput against the number of
clients, the batch size and the store size, and feed query latency against the store size —
printed as markdown tables and drawn as PNG plots.

    .venv/bin/python benchmarks/cost_growth.py            # about 25 minutes, PNGs in docs/img/
    .venv/bin/python benchmarks/cost_growth.py --quick    # smoke run, about 3 minutes
    .venv/bin/python benchmarks/cost_growth.py --skip-10m # without the 10M store

1. **Clients**: 1, 2, 4, 8 client processes sending 1,000-event `Emit`s to an empty store.
2. **Batch size**: 10, 100, 1,000 events per `Emit`, 4 clients, empty store.
3. **Store size**: 4 clients × 1,000-event batches into stores pre-filled with 100k, 1M and
   10M events (``benchmarks/query.py``'s SQL builder, the newest event at the time of the
   build), each run paired with the same run on an empty store just before it (the ratio
   holds while the machine's load moves). All clients send events that occurred up to
   ``--late`` seconds before the send, so every batch's dedupe check (an anti-join against
   the stored events in the batch's ``occurred`` range) overlaps the newest stored events, as
   it would in production; the stored events in that window are counted and printed.
4. **Query latency**: p50 of ``benchmarks/query.py``'s scenarios on each pre-filled store
   (measured on the store as built; the ingest of 3. runs on a copy of it).

Each ingest point is a fresh ``herald serve`` subprocess (``benchmarks/_server.py``) driven by
``benchmarks/ingest_native.py``'s clients for ``--seconds``; server CPU is read from /proc over
the run. After every point the server gets SIGTERM and the events in the file are counted: the
new ones must equal the acknowledged ones, or the script exits 1 (after printing everything).
The clients share the machine's cores with the server, as in the other ingest benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._server import ServerProcess
from benchmarks.ingest_native import make_batch, run_clients
from benchmarks.query import build_store, load, machine, measure_store, percentile
from collector.domain.events import Limits, datetime_to_us
from collector.mapping.native import json_body_to_columns
from collector.store.arrow_batch import columns_to_arrow
from collector.store.duckdb_store import EventStore

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = [1, 2, 4, 8]
BATCHES = [10, 100, 1000]
STORE_SIZES = [100_000, 1_000_000, 10_000_000]
# --quick: the same code paths on sizes that build in seconds (query.py's "later page"
# scenario needs a few hundred matches, hence not smaller than 20k).
QUICK_CLIENTS = [1, 2]
QUICK_BATCHES = [10, 100]
QUICK_STORE_SIZES = [20_000, 100_000]
# The clients and batch of the store-size sweep (and the defaults of the other two).
BASE_CLIENTS = 4
BASE_BATCH = 1000
# The in-process store A/B: events per append (about a group commit of 4 clients' batches).
APPEND_BATCH = 4000
# The pre-filled stores hold 7 days of events up to now; with the default 7-day retention the
# server would delete their oldest events as it starts, then checkpoint — a one-off pass that
# holds the writer for seconds and would be measured as slower ingest. Every point (the empty
# stores too) runs with a longer retention, so only ingest is measured.
SERVER_ENV = {"HERALD_STORAGE__RETENTION_DAYS": "30"}
SWEEPS = ["clients", "batch", "store"]


@dataclass
class IngestPoint:
    """One ingest run: a server, ``clients`` processes, ``batch`` events per call."""

    clients: int
    batch: int
    store_events: int  # events in the file before the run
    per_second: float  # acknowledged events per second
    p50_ms: float
    p99_ms: float
    busy: int  # UNAVAILABLE answers (retried by the clients)
    cpu_us_per_event: float  # server CPU over the run / acknowledged events
    max_rss_mb: float
    acked: int
    stored_new: int  # events received during the run, counted in the file after SIGTERM
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.stored_new == self.acked and self.exit_code == 0


@dataclass
class QueryPoint:
    """p50/p95 of one ``benchmarks/query.py`` scenario on a store of ``store_events``."""

    scenario: str
    store_events: int
    p50_ms: float
    p95_ms: float
    runs: int


@dataclass
class AppendPoint:
    """The store's own commit of a batch (dedupe anti-join, insert, side tables), in this
    process, alternating between an empty store and one pre-filled with ``store_events``:
    median CPU (all of the process's threads) and wall time per event."""

    store_events: int
    batches: int  # appended to each store
    batch: int  # events per append
    cpu_us: float  # pre-filled store
    cpu_us_empty: float
    wall_us: float
    wall_us_empty: float


@dataclass
class Results:
    clients: list[IngestPoint]
    batches: list[IngestPoint]
    # (the same run on an empty store just before, the run on the pre-filled store): paired
    # within seconds, so their ratio holds while the machine's load moves.
    stores: list[tuple[IngestPoint, IngestPoint]]
    appends: list[AppendPoint]
    queries: list[QueryPoint]
    title_note: str  # the load average, shown on every plot


def save_results(results: Results, path: Path) -> None:
    """The numbers behind the tables and plots, for ``--replot``."""
    path.write_text(json.dumps(dataclasses.asdict(results), indent=1) + "\n")


def load_results(path: Path) -> Results:
    data = json.loads(path.read_text())
    return Results(
        clients=[IngestPoint(**p) for p in data["clients"]],
        batches=[IngestPoint(**p) for p in data["batches"]],
        stores=[(IngestPoint(**e), IngestPoint(**p)) for e, p in data["stores"]],
        appends=[AppendPoint(**a) for a in data["appends"]],
        queries=[QueryPoint(**q) for q in data["queries"]],
        title_note=data["title_note"],
    )


def count_events(db: Path, column: str = "", since: datetime | None = None) -> int:
    """Events in the file at ``db``; with ``column``, those whose ``column`` >= ``since``."""
    conn = duckdb.connect(str(db), read_only=True)
    try:
        where = f"WHERE {column} >= ?" if column else ""
        got = conn.execute(f"SELECT count(*) FROM events {where}", [since] if column else [])
        row = got.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def ingest_point(
    clients: int, batch: int, seconds: float, late_s: float, db: Path | None = None
) -> IngestPoint:
    """One run against a new server on ``db`` (a temporary empty store when None)."""
    before = count_events(db) if db is not None else 0
    if db is not None and before:
        since = datetime.now(UTC) - timedelta(seconds=late_s)
        window = count_events(db, "occurred", since)
        print(f"  {window:,} stored events lie in the clients' occurred window", flush=True)
    # The new events are those received from now on: the server's retention may delete the
    # oldest pre-filled ones (built over 7 days before now) when it starts.
    started = datetime.now(UTC)
    server = ServerProcess(db=db, env=SERVER_ENV)
    try:
        cpu0 = server.cpu_seconds()
        run = run_clients(server.grpc, clients, seconds, batch, late_s)
        cpu = server.cpu_seconds() - cpu0
        code = server.stop()
        stored_new = count_events(server.db, "received", started)
        point = IngestPoint(
            clients=clients,
            batch=batch,
            store_events=before,
            per_second=run.per_second,
            p50_ms=run.latency_ms(0.5),
            p99_ms=run.latency_ms(0.99),
            busy=run.busy,
            cpu_us_per_event=cpu / run.acked * 1e6 if run.acked else 0.0,
            max_rss_mb=server.max_rss_mb,
            acked=run.acked,
            stored_new=stored_new,
            exit_code=code,
        )
    finally:
        server.cleanup()
    check = "ok" if point.ok else "ERROR: stored != acknowledged"
    print(
        f"  clients={clients} batch={batch} store={before:,}: {point.per_second:,.0f} events/s, "
        f"p50/p99 {point.p50_ms:.0f}/{point.p99_ms:.0f} ms, server CPU "
        f"{point.cpu_us_per_event:.1f} µs/event, RSS {point.max_rss_mb:.0f} MB; "
        f"acknowledged {point.acked:,}, stored {point.stored_new:,} (exit {code}) {check}",
        flush=True,
    )
    return point


def append_point(filled: Path, n: int, empty: Path, batches: int, late_s: float) -> AppendPoint:
    """``batches`` batches of ``APPEND_BATCH`` new events (``ingest_native``'s kind, occurred up
    to ``late_s`` before now), each appended to both stores in turn (which one first alternates),
    timed around ``EventStore.append``: CPU over all threads (DuckDB's too) and wall."""
    rng = random.Random(7)
    limits = Limits()
    stores = {"filled": EventStore(filled), "empty": EventStore(empty)}
    cpu: dict[str, list[float]] = {k: [] for k in stores}
    wall: dict[str, list[float]] = {k: [] for k in stores}
    try:
        for i in range(batches):
            now = datetime.now(UTC)
            events = json.loads(make_batch(rng, APPEND_BATCH))
            for ev in events:
                ago = timedelta(seconds=rng.random() * late_s)
                ev["occurred"] = (now - ago).isoformat()
            received = datetime_to_us(now)
            cols, errors = json_body_to_columns(json.dumps(events).encode(), received, limits)
            assert not errors, errors[:3]
            table = columns_to_arrow(cols, [received] * APPEND_BATCH)
            for name in ("filled", "empty") if i % 2 == 0 else ("empty", "filled"):
                c0, w0 = time.process_time(), time.perf_counter()
                inserted = stores[name].append(table)
                cpu[name].append((time.process_time() - c0) / inserted * 1e6)
                wall[name].append((time.perf_counter() - w0) / inserted * 1e6)
                assert inserted == APPEND_BATCH, (name, inserted)
    finally:
        for store in stores.values():
            store.close()
    point = AppendPoint(
        store_events=n,
        batches=batches,
        batch=APPEND_BATCH,
        cpu_us=statistics.median(cpu["filled"]),
        cpu_us_empty=statistics.median(cpu["empty"]),
        wall_us=statistics.median(wall["filled"]),
        wall_us_empty=statistics.median(wall["empty"]),
    )
    print(
        f"  store append alone, {batches} x {APPEND_BATCH}: {point.cpu_us:.1f} µs CPU/event "
        f"on {n:,} ({point.cpu_us_empty:.1f} on an empty store), wall {point.wall_us:.1f} "
        f"({point.wall_us_empty:.1f})",
        flush=True,
    )
    return point


def store_points(
    sizes: Sequence[int], args: argparse.Namespace, tmp: Path
) -> tuple[list[tuple[IngestPoint, IngestPoint]], list[AppendPoint], list[QueryPoint]]:
    """For each size: build a store; the store append A/B on a copy of it; ingest into an
    empty store and then into a fresh copy; the queries on the built store."""
    ingest: list[tuple[IngestPoint, IngestPoint]] = []
    appends: list[AppendPoint] = []
    queries: list[QueryPoint] = []
    query_args = argparse.Namespace(runs=args.query_runs, warmup=2, budget=args.query_budget)
    for n in sizes:
        path = tmp / f"events-{n}.duckdb"
        end = datetime.now(UTC)
        took = build_store(path, n, end)
        print(
            f"store size: built {n:,} events in {took:.0f} s "
            f"({path.stat().st_size / 1e6:,.0f} MB); {load()}",
            flush=True,
        )
        copy = tmp / f"ingest-{n}.duckdb"
        blank = tmp / "blank.duckdb"
        shutil.copyfile(path, copy)
        try:
            appends.append(append_point(copy, n, blank, args.append_batches, args.late))
        finally:
            for f in (copy, blank):
                for q in (f, Path(f"{f}.wal")):
                    q.unlink(missing_ok=True)
        shutil.copyfile(path, copy)
        try:
            empty = ingest_point(BASE_CLIENTS, BASE_BATCH, args.seconds, args.late)
            filled = ingest_point(BASE_CLIENTS, BASE_BATCH, args.seconds, args.late, copy)
            ingest.append((empty, filled))
        finally:
            for p in (copy, Path(f"{copy}.wal")):
                p.unlink(missing_ok=True)
        try:
            for name, _n, _what, times in measure_store(path, n, end, query_args):
                queries.append(
                    QueryPoint(name, n, percentile(times, 0.5), percentile(times, 0.95), len(times))
                )
        finally:
            for p in (path, Path(f"{path}.wal")):
                p.unlink(missing_ok=True)
    return ingest, appends, queries


def _size(n: int) -> str:
    if n == 0:
        return "empty"
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def _ingest_table(first: str, key: str, points: list[IngestPoint]) -> str:
    lines = [
        f"| {first} | events/s acknowledged | request p50 / p99 | server CPU per event "
        "| server max RSS | busy answers | acknowledged = stored |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in points:
        value = _size(p.store_events) if key == "store_events" else str(getattr(p, key))
        lines.append(
            f"| {value} | {p.per_second:,.0f} | {p.p50_ms:,.0f} / {p.p99_ms:,.0f} ms "
            f"| {p.cpu_us_per_event:.1f} µs | {p.max_rss_mb:.0f} MB | {p.busy} "
            f"| {'yes' if p.ok else f'**no** ({p.acked:,} / {p.stored_new:,})'} |"
        )
    return "\n".join(lines)


def _store_table(pairs: list[tuple[IngestPoint, IngestPoint]]) -> str:
    lines = [
        "| events stored before | events/s acknowledged | empty store just before | ratio "
        "| server CPU per event (empty before) | request p50 / p99 | server max RSS "
        "| acknowledged = stored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e, p in pairs:
        ok = "yes" if p.ok and e.ok else f"**no** ({p.acked:,} / {p.stored_new:,})"
        lines.append(
            f"| {_size(p.store_events)} | {p.per_second:,.0f} | {e.per_second:,.0f} "
            f"| {p.per_second / e.per_second:.2f} "
            f"| {p.cpu_us_per_event:.1f} µs ({e.cpu_us_per_event:.1f} µs) "
            f"| {p.p50_ms:,.0f} / {p.p99_ms:,.0f} ms | {p.max_rss_mb:.0f} MB | {ok} |"
        )
    return "\n".join(lines)


def _append_table(points: list[AppendPoint]) -> str:
    lines = [
        "| events stored before | CPU per event | empty store | ratio | wall per event "
        "| empty store | ratio | appends each |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in points:
        lines.append(
            f"| {_size(a.store_events)} | {a.cpu_us:.1f} µs | {a.cpu_us_empty:.1f} µs "
            f"| {a.cpu_us / a.cpu_us_empty:.2f} | {a.wall_us:.1f} µs | {a.wall_us_empty:.1f} µs "
            f"| {a.wall_us / a.wall_us_empty:.2f} | {a.batches} |"
        )
    return "\n".join(lines)


def _query_table(points: list[QueryPoint]) -> str:
    sizes = sorted({p.store_events for p in points})
    scenarios = list(dict.fromkeys(p.scenario for p in points))
    by = {(p.scenario, p.store_events): p for p in points}
    lines = [
        "| scenario (p50 ms) | " + " | ".join(_size(n) for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for s in scenarios:
        cells = [f"{by[s, n].p50_ms:,.1f}" if (s, n) in by else "" for n in sizes]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(results: Results) -> str:
    """The four markdown tables, each under a heading naming its plot."""
    parts = []
    if results.clients:
        parts += [
            f"### Throughput against clients (batch {BASE_BATCH}, empty store)",
            _ingest_table("clients", "clients", results.clients),
        ]
    if results.batches:
        parts += [
            f"### Throughput against batch size ({BASE_CLIENTS} clients, empty store)",
            _ingest_table("events per Emit", "batch", results.batches),
        ]
    if results.stores:
        parts += [
            f"### Throughput against store size ({BASE_CLIENTS} clients, batch {BASE_BATCH})",
            _store_table(results.stores),
        ]
    if results.appends:
        parts += [
            f"### The store's append alone against store size (in process, {APPEND_BATCH:,}-event "
            "batches, alternating with an empty store)",
            _append_table(results.appends),
        ]
    if results.queries:
        parts += ["### Query latency against store size", _query_table(results.queries)]
    return "\n\n".join(parts)


def _paired_bars(
    ax: Axes, empty: list[float], filled: list[float], ticks: list[str], style: tuple[str, str]
) -> None:
    """Each store size as two bars — the empty store's (gray) and the pre-filled one's, labelled
    with their ratio. ``style``: the empty bars' legend label, the pre-filled bars' colour."""
    width = 0.38
    xs = list(range(len(ticks)))
    empty_label, color = style
    ax.bar([x - width / 2 for x in xs], empty, width, color="tab:gray", label=empty_label)
    bars = ax.bar([x + width / 2 for x in xs], filled, width, color=color, label="pre-filled store")
    ax.bar_label(
        bars, labels=[f"{f / e:.2f}×" for e, f in zip(empty, filled, strict=True)], fontsize=8
    )
    ax.set_xticks(xs, ticks)
    ax.set_ylim(0, max(empty + filled, default=1) * 1.45)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncol=1, fontsize=8)


def plot(results: Results, out: Path) -> list[Path]:
    """One PNG per sweep in ``out``; returns their paths. matplotlib is imported here only
    (the ``bench`` extra), with the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    # Plain numbers with thousands separators (not 1e4 or 10^2) on every value axis.
    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    def throughput_line(ax: Axes, xs: list[int], points: list[IngestPoint]) -> None:
        ys = [p.per_second for p in points]
        ax.plot(xs, ys, marker="o", color="tab:blue", label="events/s acknowledged")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(
                f"{y:,.0f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                zorder=5,
            )
        ax.set_ylabel("events/s acknowledged")
        ax.set_ylim(0, max(ys) * 1.45 if ys else 1)
        ax.yaxis.set_major_formatter(plain)
        ax.grid(True, alpha=0.3)
        right = ax.twinx()
        right.plot(
            xs,
            [p.p99_ms for p in points],
            marker="s",
            linestyle="--",
            color="tab:gray",
            label="request p99 ms",
        )
        right.set_ylabel("request p99 (ms)", color="tab:gray")
        right.set_ylim(0, max(p.p99_ms for p in points) * 1.45 if points else 1)
        right.yaxis.set_major_formatter(plain)
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", ncol=2, fontsize=8)

    note = results.title_note
    if results.clients:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = [p.clients for p in results.clients]
        throughput_line(ax, xs, results.clients)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("client processes")
        ax.set_title(f"Native ingest vs clients (batch {BASE_BATCH}) {note}", fontsize=9)
        save(fig, "cost-growth-clients.png")
    if results.batches:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = [p.batch for p in results.batches]
        throughput_line(ax, xs, results.batches)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.set_xlabel("events per Emit")
        ax.set_title(f"Native ingest vs batch size ({BASE_CLIENTS} clients) {note}", fontsize=9)
        save(fig, "cost-growth-batch.png")
    if results.stores or results.appends:
        # Left: the server, paired runs; right: the store's append alone, in process.
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
        empty_ys = [e.per_second for e, _ in results.stores]
        ys = [p.per_second for _, p in results.stores]
        _paired_bars(
            ax,
            empty_ys,
            ys,
            [_size(p.store_events) for _, p in results.stores],
            ("empty store, just before", "tab:blue"),
        )
        ax.set_ylabel("events/s acknowledged")
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("events in the store before the run")
        ax.set_title(f"herald serve, {BASE_CLIENTS} clients × {BASE_BATCH:,}", fontsize=9)

        _paired_bars(
            ax2,
            [a.cpu_us_empty for a in results.appends],
            [a.cpu_us for a in results.appends],
            [_size(a.store_events) for a in results.appends],
            ("empty store (alternating)", "tab:orange"),
        )
        ax2.set_ylabel("CPU per event (µs), median")
        ax2.set_xlabel("events in the store before")
        ax2.set_title(f"EventStore.append alone, {APPEND_BATCH:,}-event batches", fontsize=9)
        fig.suptitle(f"Native ingest vs store size {note}", fontsize=10)
        save(fig, "cost-growth-store.png")
    if results.queries:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        sizes = sorted({p.store_events for p in results.queries})
        for scenario in dict.fromkeys(p.scenario for p in results.queries):
            pts = sorted(
                (p for p in results.queries if p.scenario == scenario), key=lambda p: p.store_events
            )
            ax.plot(
                [p.store_events for p in pts], [p.p50_ms for p in pts], marker="o", label=scenario
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [_size(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("events in the store")
        ax.set_ylabel("p50 latency (ms)")
        ax.yaxis.set_major_formatter(plain)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"Feed queries vs store size {note}", fontsize=9)
        save(fig, "cost-growth-query.png")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds per ingest point (default 10, 3 with --quick)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer and smaller points (PNGs to a temp dir unless --out)",
    )
    ap.add_argument("--skip-10m", action="store_true", help="leave the 10M-event store out")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the PNGs and cost-growth.json (default docs/img, or a temp dir "
        "with --quick)",
    )
    ap.add_argument(
        "--late",
        type=float,
        default=600.0,
        help="events occurred up to this many seconds before they are sent",
    )
    ap.add_argument(
        "--append-batches",
        type=int,
        default=None,
        help=f"batches of {APPEND_BATCH} per store in the in-process append A/B "
        "(default 30, 6 with --quick)",
    )
    ap.add_argument("--query-runs", type=int, default=15, help="timed runs per query scenario")
    ap.add_argument(
        "--query-budget",
        type=float,
        default=20.0,
        help="seconds per query scenario after which it stops (at least 5 runs)",
    )
    ap.add_argument("--dir", type=Path, default=None, help="where the temp stores go")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=SWEEPS,
        default=SWEEPS,
        help="run only these sweeps (store = ingest and queries against store size)",
    )
    ap.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="measure nothing: print the tables and draw the plots of a saved cost-growth.json",
    )
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.append_batches is None:
        args.append_batches = 6 if args.quick else 30
    clients = QUICK_CLIENTS if args.quick else CLIENTS
    batches = QUICK_BATCHES if args.quick else BATCHES
    sizes = QUICK_STORE_SIZES if args.quick else STORE_SIZES
    if args.skip_10m:
        sizes = [n for n in sizes if n < 10_000_000]
    out = args.out
    if out is None:
        out = (
            Path(tempfile.mkdtemp(prefix="herald-cost-growth-"))
            if args.quick
            else (ROOT / "docs" / "img")
        )

    if args.replot is not None:
        results = load_results(args.replot)
        print(tables(results))
        for path in plot(results, out):
            print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
        return

    command = ".venv/bin/python benchmarks/cost_growth.py " + shlex.join(sys.argv[1:])
    print(f"command: {command.strip()}")
    print(f"machine: {machine()}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {load()}", flush=True)
    loads = [os.getloadavg()[0]]
    t0 = time.perf_counter()

    # The 4-client, 1,000-event point belongs to both sweeps: measured once.
    shared: dict[tuple[int, int], IngestPoint] = {}

    def point(c: int, b: int) -> IngestPoint:
        if (c, b) not in shared:
            shared[c, b] = ingest_point(c, b, args.seconds, args.late)
            loads.append(os.getloadavg()[0])
        return shared[c, b]

    by_clients: list[IngestPoint] = []
    by_batch: list[IngestPoint] = []
    by_store: list[tuple[IngestPoint, IngestPoint]] = []
    appends: list[AppendPoint] = []
    queries: list[QueryPoint] = []
    if "clients" in args.only:
        print(f"clients: batch {BASE_BATCH}, empty store", flush=True)
        by_clients = [point(c, BASE_BATCH) for c in clients]
    if "batch" in args.only:
        print(f"batch size: {BASE_CLIENTS} clients, empty store", flush=True)
        by_batch = [point(BASE_CLIENTS, b) for b in batches]
    if "store" in args.only:
        with tempfile.TemporaryDirectory(prefix="herald-cost-growth-", dir=args.dir) as tmp:
            by_store, appends, queries = store_points(sizes, args, Path(tmp))
    loads.append(os.getloadavg()[0])

    # The load at the start is other work's; later samples include this run's own processes.
    note = f"(load avg {loads[0]:.1f} at start, {max(loads):.1f} max)"
    results = Results(by_clients, by_batch, by_store, appends, queries, note)
    print()
    print(tables(results))
    print()
    out.mkdir(parents=True, exist_ok=True)
    save_results(results, out / "cost-growth.json")
    print(f"wrote {out / 'cost-growth.json'}")
    for path in plot(results, out):
        print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    print(
        f"\ntotal run time {time.perf_counter() - t0:.0f} s; 1-min load average during the run "
        f"{min(loads):.2f}-{max(loads):.2f}; {load()} at the end"
    )
    bad = [p for p in [*by_clients, *by_batch, *(p for pair in by_store for p in pair)] if not p.ok]
    if bad:
        print(f"ERROR: {len(bad)} run(s) where the stored events differ from the acknowledged")
        sys.exit(1)


if __name__ == "__main__":
    main()
