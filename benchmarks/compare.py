"""Herald against the naive ingest ceiling, on the same input, in one run (issue 13, item 5).

    .venv/bin/python benchmarks/compare.py [--seconds 15] [--clients 4] [--rounds 1]

The *ceiling* is the least a collector must do with an OTLP trace export, in this process, on
one core, with nothing else running: parse the protobuf, walk the spans in Python into columns
(id, name, time, resource and payload JSON), build an Arrow table and insert it into a DuckDB
file, committing every ``--commit-requests`` requests. No validation, no network, no dedupe, no
acknowledgements. *Herald* is a real ``herald serve`` subprocess fed the same 512-span requests
(``benchmarks/ingest_otlp.py``'s template and clients) over OTLP/gRPC by ``--clients``
processes, counting only acknowledged (committed) spans. The ceiling runs before and after
Herald and its mean is the reference, so the printed fraction holds on a noisy machine: both
sides see the same load, within seconds of each other.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks.ingest_otlp import ITEMS, run_scenario, trace_template

TABLE = """CREATE TABLE events (
    id VARCHAR, event VARCHAR, occurred TIMESTAMPTZ, resource JSON, related JSON, payload JSON
)"""


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return (
        getattr(v, kind)
        if kind in ("string_value", "int_value", "double_value", "bool_value")
        else None
    )


def naive_columns(body: bytes) -> dict[str, list[Any]]:
    """One export request → column lists: the Python walk every mapping needs at least."""
    req = ExportTraceServiceRequest.FromString(body)
    cols: dict[str, list[Any]] = {
        k: [] for k in ("id", "event", "occurred", "resource", "related", "payload")
    }
    for rs in req.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        resource_json = orjson.dumps(resource).decode()
        for ss in rs.scope_spans:
            for span in ss.spans:
                cols["id"].append(span.trace_id.hex() + span.span_id.hex())
                cols["event"].append(span.name)
                cols["occurred"].append(span.start_time_unix_nano // 1000)
                cols["resource"].append(resource_json)
                cols["related"].append("[]")
                payload = {kv.key: _value(kv.value) for kv in span.attributes}
                payload["duration_ns"] = span.end_time_unix_nano - span.start_time_unix_nano
                payload["parent"] = span.parent_span_id.hex()
                payload["status"] = span.status.code
                cols["payload"].append(orjson.dumps(payload).decode())
    return cols


def ceiling(seconds: float, commit_requests: int, db: Path) -> float:
    """Spans/s of the naive pipeline over ``seconds`` (fresh ids per request, like the clients)."""
    rng = random.Random(99)
    suffix = rng.randbytes(8)
    template = trace_template(rng, suffix, 0)
    con = duckdb.connect(str(db))
    con.execute(TABLE)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("event", pa.string()),
            ("occurred", pa.timestamp("us", tz="UTC")),
            ("resource", pa.string()),
            ("related", pa.string()),
            ("payload", pa.string()),
        ]
    )
    spans = counter = 0
    pending: list[pa.Table] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        counter += 1
        body = template.replace(suffix, b"\xfe" + counter.to_bytes(7, "big"))
        pending.append(pa.table(naive_columns(body), schema=schema))
        if len(pending) == commit_requests:
            batch = pa.concat_tables(pending)  # read by DuckDB's replacement scan
            con.execute("INSERT INTO events SELECT * FROM batch")
            spans += batch.num_rows
            pending.clear()
    elapsed = time.monotonic() - t0
    stored = con.execute("SELECT count(*) FROM events").fetchone()
    con.close()
    assert stored is not None and stored[0] == spans
    return spans / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--commit-requests", type=int, default=8, help="ceiling: requests per commit"
    )
    parser.add_argument(
        "--mapping-workers",
        type=int,
        default=None,
        help="herald: ingest.mapping_workers (default: the configured default)",
    )
    args = parser.parse_args()
    print_header()
    args.span_events = 0
    args.profile = None  # run_scenario can profile the server; not here
    fractions: list[float] = []
    with tempfile.TemporaryDirectory(prefix="herald-compare-") as tmp:
        for r in range(args.rounds):
            before = ceiling(
                args.seconds, args.commit_requests, Path(tmp) / f"ceiling-{r}-a.duckdb"
            )
            row = run_scenario(
                "grpc-traces", args, Path(tmp) / f"herald-{r}.duckdb", args.mapping_workers
            )
            after = ceiling(args.seconds, args.commit_requests, Path(tmp) / f"ceiling-{r}-b.duckdb")
            if row.errors or row.stored_events < row.expected_events:
                raise SystemExit(f"herald run failed: {row}")
            reference = (before + after) / 2
            fractions.append(row.rate / reference)
            print(
                f"round {r + 1}: ceiling {before:,.0f} / {after:,.0f} spans/s (one core); "
                f"herald {row.rate:,.0f} spans/s acknowledged ({args.clients} gRPC clients, "
                f"p99 {row.p99_ms:.0f} ms, busy {row.busy}, RSS {row.rss_mb:.0f} MB, "
                f"server CPU {row.cpu_pct:.0f} %, {row.workers} mapping workers' CPU "
                f"{row.workers_cpu_pct:.0f} %) → {row.rate / reference:.2f} of the ceiling",
                flush=True,
            )
    print(
        f"herald / ceiling: {statistics.median(fractions):.2f} "
        f"(median of {len(fractions)} rounds; {ITEMS}-span requests)"
    )


if __name__ == "__main__":
    main()
