"""The OTel SDK exporter plugin's cost in the app: spans per second through the real SDK into
Herald, embedded (``db=``) and remote (``address=``, a ``herald serve`` child).

    .venv/bin/python benchmarks/otel_plugin.py [--spans 50000] [--modes drop,embedded,remote,otlp]

``drop`` is an exporter that drops everything (what the SDK itself costs); ``otlp`` is the OTel
project's own OTLP/gRPC exporter sending to the same server, for comparison. First each exporter
alone: ready-made SDK spans (5 attributes each, traces of 10) exported in batches of 512 from one
thread. Then with the SDK (``TracerProvider`` + ``BatchSpanProcessor`` with its defaults: batches
of 512, a queue of 2,048): one thread creates ``--spans`` spans as fast as it can, and the time
runs until ``provider.shutdown()`` returned, i.e. every span is exported — and, for Herald,
committed. The SDK drops spans when its queue is full; what arrived is counted from the store
(embedded: the file after shutdown; remote: the server's file after SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector.otel import HeraldSpanExporter


class DropExporter(SpanExporter):
    """Counts and drops: the SDK's own cost."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def make_spans(provider: TracerProvider, n: int) -> None:
    tracer = provider.get_tracer("bench")
    for t in range(0, n, 10):
        with tracer.start_as_current_span("request") as root:
            root.set_attribute("http.method", "GET")
            root.set_attribute("http.route", "/orders/{id}")
            root.set_attribute("http.status_code", 200)
            root.set_attribute("order.id", f"o-{t}")
            root.set_attribute("user.id", t % 97)
            for i in range(min(9, n - t - 1)):
                with tracer.start_as_current_span("db.query") as span:
                    span.set_attribute("db.system", "postgresql")
                    span.set_attribute("db.statement", "SELECT * FROM orders WHERE id = $1")
                    span.set_attribute("db.rows", i)
                    span.set_attribute("net.peer.name", "db.internal")
                    span.set_attribute("retry", False)


def stored(db: Path) -> int:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def exporter_for(mode: str, tmp: Path) -> tuple[SpanExporter, ServerProcess | None, Path | None]:
    if mode == "drop":
        return DropExporter(), None, None
    if mode == "embedded":
        db = tmp / f"embedded-{time.monotonic_ns()}.duckdb"
        return HeraldSpanExporter(db=str(db)), None, db
    server = ServerProcess(db=tmp / f"{mode}-{time.monotonic_ns()}.duckdb")
    if mode == "otlp":  # the OTel project's own OTLP/gRPC exporter, for comparison
        return OTLPSpanExporter(endpoint=f"http://{server.grpc}", insecure=True), server, server.db
    return HeraldSpanExporter(address=server.grpc), server, server.db


def arrived(exporter: SpanExporter, server: ServerProcess | None, db: Path | None) -> int:
    if server is not None:
        server.stop()
    count = exporter.count if isinstance(exporter, DropExporter) else stored(db) if db else 0
    if server is not None:
        server.cleanup()
    return count


def run_exporter_alone(mode: str, spans: list[ReadableSpan], tmp: Path) -> None:
    """The exporter by itself: ready-made spans exported in batches of 512 from one thread."""
    exporter, server, db = exporter_for(mode, tmp)
    started = time.perf_counter()
    for i in range(0, len(spans), 512):
        assert exporter.export(spans[i : i + 512]) == SpanExportResult.SUCCESS
    took = time.perf_counter() - started
    exporter.shutdown()
    count = arrived(exporter, server, db)
    print(
        f"exporter alone  {mode:9s} {len(spans)} spans in {took:.2f} s "
        f"-> {len(spans) / took:,.0f} spans/s ({count} stored)"
    )


def run_with_sdk(mode: str, n: int, tmp: Path) -> None:
    """The SDK and the exporter together in one app, as an instrumented app runs them."""
    exporter, server, db = exporter_for(mode, tmp)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    started = time.perf_counter()
    make_spans(provider, n)
    created = time.perf_counter() - started
    provider.shutdown()
    took = time.perf_counter() - started
    count = arrived(exporter, server, db)
    print(
        f"SDK + exporter  {mode:9s} {n} spans created in {created:.2f} s, all exported after "
        f"{took:.2f} s; {count} arrived, {n - count} dropped by the SDK's full queue"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--modes", default="drop,embedded,remote,otlp")
    args = parser.parse_args()
    print_header()
    modes = args.modes.split(",")
    memory = InMemorySpanExporter()
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(memory))
    make_spans(made, args.spans)
    spans = list(memory.get_finished_spans())
    with tempfile.TemporaryDirectory(prefix="herald-otel-bench-") as tmp:
        for mode in modes:
            if mode != "drop":  # nothing to measure
                run_exporter_alone(mode, spans, Path(tmp))
        for mode in modes:
            run_with_sdk(mode, args.spans, Path(tmp))


if __name__ == "__main__":
    main()
