"""Reading one trace (``herald trace``, ``GET /traces/{id}``, the ``GetTrace`` RPC): p50/p95 of
``domain/traces.read_trace`` through ``EventReader`` — the code path of the servers and the
CLI's ``--db`` — on a store of synthetic events with one OTel trace in it.

    .venv/bin/python benchmarks/trace_read.py                      # 1M events, 200-span trace
    .venv/bin/python benchmarks/trace_read.py --events 1000000 10000000 --spans 200 2000

The background events are ``benchmarks/query.py``'s (built the same way, 7 days before now,
0–5 related resources each, ``trace`` among their roles). The trace is appended as the OTLP
mapping stores it: each span an ``otel.span.*`` event related to its span, its trace and its
parent (a tree, 4 children per span), one span event per 10 spans and one log per 5 spans,
in the last minute. A trace is found by the related-resource filter over every stored time,
so its cost is a scan of the ``related`` column whatever the trace's size; assembling the
tree is the smaller part (reported separately).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.query import build_store, load, machine, measure, percentile
from collector.config import QueryConfig
from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.traces import assemble_trace, read_trace, trace_filter
from collector.store.duckdb_store import EventStore, columns_to_arrow
from collector.store.reader import EventReader

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SERVICE = {"prefect.resource.id": "otel.service.checkout", "prefect.resource.name": "checkout"}
TRACE_ITEM = {"prefect.resource.id": f"otel.trace.{TRACE}", "prefect.resource.role": "trace"}
Row = tuple[int, int, str, list[float]]


def trace_columns(spans: int, start: datetime) -> EventColumns:
    """The events of one trace of ``spans`` spans starting at ``start``, as ingest writes them."""
    cols = EventColumns()
    n = 0

    def add(name: str, at: datetime, related: list[dict[str, str]], payload: object) -> None:
        nonlocal n
        n += 1
        event_id = f"00000000-0000-8000-8000-{n:012x}"
        cols.append(
            event_id, datetime_to_us(at), name, SERVICE, related, orjson.dumps(payload).decode()
        )

    for i in range(spans):
        span_id = f"{i + 1:016x}"
        begin = start + timedelta(milliseconds=i)
        end = begin + timedelta(milliseconds=5)
        item = {
            "prefect.resource.id": f"otel.span.{span_id}",
            "prefect.resource.role": "span",
            "prefect.resource.name": f"op {i}",
            "otel.span.kind": "internal",
            "otel.trace_id": TRACE,
        }
        related = [item, TRACE_ITEM]
        if i:
            parent = f"{(i - 1) // 4 + 1:016x}"
            related.append(
                {
                    "prefect.resource.id": f"otel.span.{parent}",
                    "prefect.resource.role": "parent-span",
                }
            )
        status = "error" if i % 50 == 7 else "ok"
        add(
            f"otel.span.{status}",
            end,
            related,
            {
                "kind": "internal",
                "status": {"code": status, "message": ""},
                "start_time": begin.isoformat(),
                "end_time": end.isoformat(),
                "duration_ms": 5.0,
            },
        )
        if i % 10 == 0:
            add(
                "exception",
                begin,
                [item, TRACE_ITEM],
                {"exception.type": "E", "span_name": f"op {i}"},
            )
        if i % 5 == 0:
            add(
                "otel.log.info",
                begin,
                [
                    TRACE_ITEM,
                    {
                        "prefect.resource.id": f"otel.span.{span_id}",
                        "prefect.resource.role": "span",
                    },
                ],
                {"body": "hello", "severity_number": 9, "severity_text": "INFO", "attributes": {}},
            )
    return cols


def run(n: int, spans: int, directory: Path, args: argparse.Namespace) -> list[Row]:
    """Build one store, measure reading its trace, delete it."""
    path = directory / f"events-{n}-{spans}.duckdb"
    seconds = build_store(path, n, datetime.now(UTC) - timedelta(minutes=2))
    store = EventStore(path)
    cols = trace_columns(spans, datetime.now(UTC) - timedelta(minutes=1))
    store.append(columns_to_arrow(cols, [datetime_to_us(datetime.now(UTC))] * len(cols)))
    print(f"built {n:,} events + a {spans}-span trace ({len(cols)} events) in {seconds:.1f} s")
    reader = EventReader(store, QueryConfig())
    try:
        trace = read_trace(reader, TRACE)
        assert trace["span_count"] == spans, trace["span_count"]
        page = reader.query(trace_filter(TRACE), 1000)
        events = list(page.events)
        while page.next_page:
            page = reader.query(None, 1000, page.next_page)
            events += page.events
        read = measure(lambda: read_trace(reader, TRACE), args.runs, 2, args.budget)
        built = measure(lambda: assemble_trace(TRACE, events), args.runs, 2, args.budget)
    finally:
        store.close()
        path.unlink(missing_ok=True)
    return [
        (n, spans, "read_trace (query + assemble)", read),
        (n, spans, "assemble_trace alone", built),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--spans", type=int, nargs="+", default=[200])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--budget", type=float, default=30.0)
    args = ap.parse_args()
    print("command: .venv/bin/python benchmarks/trace_read.py " + shlex.join(sys.argv[1:]))
    print(f"machine: {machine()}")
    print(f"{load()} at the start")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="herald-trace-bench-") as tmp:
        for n in args.events:
            for spans in args.spans:
                rows += run(n, spans, Path(tmp), args)
    print()
    print("| events | spans | what | p50 ms | p95 ms | runs |")
    print("|---|---|---|---|---|---|")
    for n, spans, what, times in rows:
        print(
            f"| {n:,} | {spans} | {what} | {percentile(times, 0.5):.1f} | "
            f"{percentile(times, 0.95):.1f} | {len(times)} |"
        )
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
