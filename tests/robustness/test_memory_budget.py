"""The server's memory budget under overload (issue 13, item 2): `herald serve` with a small
`server.memory_budget_bytes` is sent more native `Emit` and OTLP trace exports than it can take,
from many threads at once, for ~15 s. Its RSS must stay under a bound proportional to the
budget, overload must be answered busy (UNAVAILABLE, never UNKNOWN/INTERNAL), and every
acknowledged event must be in the file after SIGTERM.

The bound is loose on purpose (1.5 x the budget, for a loaded test machine; the 5-minute soak
and its numbers are benchmarks/soak_memory.py's, docs/benchmarks.md). Measured with this load:
~290-330 MB at 256 MiB; with a 4 GiB budget (the parts as large as before the budget existed)
465 MB within the 15 s, climbing."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import duckdb
import grpc
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.testing import ports_zero, serve_process

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
BUDGET = 256 * MiB
RSS_BOUND_MB = 1.5 * BUDGET / MiB
SECONDS = 15.0
NATIVE_THREADS = 12
OTLP_THREADS = 6
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def native_body(rng: random.Random, prefix: str) -> bytes:
    """500 events with ids ``<prefix>-<n>`` (prefix: 8 hex digits + ``-xxxx-4000``)."""
    return orjson.dumps(
        [
            {
                "event": f"budget.test.{rng.choice(['a', 'b', 'c'])}",
                "resource": {
                    "prefect.resource.id": f"budget.{rng.randrange(1000)}",
                    "label.x": "x" * rng.randrange(10, 200),
                },
                "related": [{"prefect.resource.id": "budget.parent", "prefect.resource.role": "p"}],
                "payload": {"n": n, "text": "y" * rng.randrange(10, 300)},
                "id": f"{prefix}-8000-{n:012x}",
            }
            for n in range(500)
        ]
    )


def trace_body(rng: random.Random, sender: int, sequence: int) -> bytes:
    """256 spans, ids unique per (sender, sequence)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="budget"))
    spans = rs.scope_spans.add()
    now = time.time_ns()
    for n in range(256):
        span = spans.spans.add()
        span.trace_id = (
            sender.to_bytes(4, "big") + sequence.to_bytes(8, "big") + b"\x01\x02\x03\x04"
        )
        span.span_id = (n + 1).to_bytes(8, "big")
        span.name = f"GET /budget/{rng.randrange(50)}"
        span.start_time_unix_nano = now + n
        span.end_time_unix_nano = now + n + 1_000_000
        span.attributes.extend(
            KeyValue(key=f"attr.{k}", value=AnyValue(string_value="z" * rng.randrange(5, 60)))
            for k in range(8)
        )
    return request.SerializeToString()


class Load:
    """Client threads sending until ``stop_at``; what each got back, counted."""

    def __init__(self, address: str, stop_at: float) -> None:
        self.address = address
        self.stop_at = stop_at
        self.lock = threading.Lock()
        self.acked = 0
        self.busy = 0
        self.other: list[str] = []

    def _count(self, acked: int = 0, busy: int = 0, other: str = "") -> None:
        with self.lock:
            self.acked += acked
            self.busy += busy
            if other:
                self.other.append(other)

    def _failed(self, exc: grpc.RpcError) -> None:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            self._count(busy=1)
            time.sleep(0.05)  # as an exporter backs off
        else:
            self._count(other=f"{exc.code().name}: {exc.details()}")

    def native(self, sender: int) -> None:
        rng = random.Random(sender)
        channel = grpc.insecure_channel(self.address)
        stub = herald_pb2_grpc.HeraldStub(channel)
        sequence = 0
        while time.monotonic() < self.stop_at:
            sequence += 1
            body = native_body(rng, f"{sequence:08x}-{sender:04x}-4000")
            try:
                reply = stub.Emit(herald_pb2.EmitRequest(events_json=body), timeout=60)
            except grpc.RpcError as exc:
                self._failed(exc)
                continue
            self._count(acked=reply.accepted, other=str(reply.errors[0]) if reply.errors else "")
        channel.close()

    def otlp(self, sender: int) -> None:
        rng = random.Random(1000 + sender)
        channel = grpc.insecure_channel(self.address)
        export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse]
        export = channel.unary_unary(
            TRACE_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
        )
        sequence = 0
        while time.monotonic() < self.stop_at:
            sequence += 1
            try:
                reply = export(trace_body(rng, sender, sequence), timeout=60)
            except grpc.RpcError as exc:
                self._failed(exc)
                continue
            self._count(acked=256 - reply.partial_success.rejected_spans)
        channel.close()


def test_overload_holds_the_memory_budget_and_loses_no_acknowledged_event(
    tmp_path: Path,
) -> None:
    db = tmp_path / "budget.duckdb"
    env = {"HERALD_SERVER__MEMORY_BUDGET_BYTES": str(BUDGET)}
    with serve_process(*ports_zero(db), env=env) as served:
        load = Load(served.grpc, time.monotonic() + SECONDS)
        threads = [threading.Thread(target=load.native, args=(i,)) for i in range(NATIVE_THREADS)]
        threads += [threading.Thread(target=load.otlp, args=(i,)) for i in range(OTLP_THREADS)]
        for thread in threads:
            thread.start()
        peak = 0.0
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, rss_mb(served.proc.pid))
            time.sleep(0.1)
        for thread in threads:
            thread.join()
        served.sigterm()
    assert not load.other, f"answers other than OK or busy: {load.other[:3]}"
    assert load.acked > 0
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    assert row is not None and row[0] == load.acked, "acknowledged events are missing"
    assert peak <= RSS_BOUND_MB, (
        f"server RSS reached {peak:.0f} MB under a {BUDGET // MiB} MiB budget "
        f"(bound {RSS_BOUND_MB:.0f} MB; {load.busy} busy answers)"
    )
