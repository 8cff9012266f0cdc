"""OTLP ingest throughput, end to end: spans (and log records) per second ACKNOWLEDGED — every
request answered OK has been committed to the DuckDB file — over OTLP/gRPC and OTLP/HTTP, from
several concurrent client processes, plus the server's peak RSS and CPU.

    .venv/bin/python benchmarks/ingest_otlp.py [--seconds 15] [--clients 4] [--span-events 0]
        [--scenarios grpc-traces,http-traces,grpc-logs,http-logs] [--profile DIR]
        [--mapping-workers 0,2] [--rounds 1]

``--mapping-workers`` runs each scenario once per value of ``ingest.mapping_workers`` (OTLP
mapped in worker processes; 0 = in the server's process), alternated within each of
``--rounds`` rounds so that A and B see the same machine; "server CPU" is the server process
alone, "workers CPU" its mapping workers (and their forkserver).

Each scenario starts its own ``herald serve`` (temp DuckDB file, ports 127.0.0.1:0, ready when
its readiness line appears on stderr), runs the clients for ``--seconds``, stops the server
with SIGTERM and counts the events in the file: every acknowledged event must be there.

Clients pre-build one realistic 512-span ``ExportTraceServiceRequest`` (10 attributes per span,
traces of 16 spans, a few errors; no span events unless ``--span-events N``) or 512-record
``ExportLogsServiceRequest`` and serialize it once. Every trace id ends in the same 8 random
bytes, so one ``bytes.replace`` per send makes all ids new (Herald dedupes re-sent spans)
without re-encoding: the measurement is the server, not the load generator. gRPC goes through
a raw grpcio stub, HTTP through ``http.client`` with keep-alive, both protobuf. A "busy"
answer (UNAVAILABLE / 503) is counted, and the client backs off 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_ERROR,
    SEVERITY_NUMBER_INFO,
    SEVERITY_NUMBER_WARN,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector.config import IngestConfig

ITEMS = 512  # spans or log records per request

SCENARIOS = {
    # name: (transport, signal)
    "grpc-traces": ("grpc", "traces"),
    "http-traces": ("http", "traces"),
    "grpc-logs": ("grpc", "logs"),
    "http-logs": ("http", "logs"),
}
GRPC_METHODS: dict[str, tuple[str, type[Message]]] = {
    "traces": (
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ExportTraceServiceResponse,
    ),
    "logs": (
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        ExportLogsServiceResponse,
    ),
}
HTTP_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs"}
PROFILE_SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}

ROUTES = [
    f"/api/{r}"
    for r in (
        "cart",
        "orders",
        "items/{id}",
        "users/{id}",
        "search",
        "checkout",
        "payments",
        "inventory",
        "shipping",
        "health",
    )
]
RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.version": "2.14.0",
    "service.instance.id": "checkout-7d9f8b-x2k4q",
    "host.name": "node-17",
    "k8s.pod.name": "checkout-7d9f8b-x2k4q",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.version": "1.45.2",
}


# --- request templates ---------------------------------------------------------------------


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def trace_template(rng: random.Random, suffix: bytes, span_events: int) -> bytes:
    """512 spans in traces of 16 (a server root, children with parents), ~10 attributes each."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(_kv(k, v) for k, v in RESOURCE.items())
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.flask"
    ss.scope.version = "0.56b0"
    t0 = time.time_ns()
    trace_id = root_id = b""
    for i in range(ITEMS):
        if i % 16 == 0:
            trace_id = rng.randbytes(8) + suffix
            root_id = rng.randbytes(8)
        span = ss.spans.add()
        span.trace_id = trace_id
        span.span_id = root_id if i % 16 == 0 else rng.randbytes(8)
        if i % 16:
            span.parent_span_id = root_id
        route = rng.choice(ROUTES)
        span.name = f"GET {route}" if i % 16 == 0 else f"SELECT shop.{route.split('/')[2]}"
        span.kind = Span.SPAN_KIND_SERVER if i % 16 == 0 else Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = t0 + i * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(100_000, 90_000_000)
        error = rng.random() < 0.05
        status = 500 if error else 200
        span.attributes.extend(
            [
                _kv("http.request.method", "GET"),
                _kv("http.route", route),
                _kv("url.path", route.replace("{id}", str(rng.randrange(10_000)))),
                _kv("http.response.status_code", status),
                _kv("server.address", "checkout.shop.svc"),
                _kv("server.port", 8080),
                _kv("client.address", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
                _kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
                _kv("network.protocol.version", "1.1"),
                _kv("app.cache.hit_ratio", round(rng.random(), 3)),
            ]
        )
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "upstream returned 500"
        for e in range(span_events):
            ev = span.events.add()
            ev.name = "exception" if error else "cache.miss"
            ev.time_unix_nano = span.start_time_unix_nano + e * 1000
            ev.attributes.extend(
                [
                    _kv("exception.type", "TimeoutError"),
                    _kv("exception.message", "upstream timed out after 30s"),
                    _kv("attempt", e),
                ]
            )
    return req.SerializeToString()


def logs_template(rng: random.Random, suffix: bytes) -> bytes:
    """512 log records with trace context, a string body and 6 attributes."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(_kv(k, v) for k, v in RESOURCE.items())
    sl = rl.scope_logs.add()
    sl.scope.name = "checkout.orders"
    t0 = time.time_ns()
    for i in range(ITEMS):
        rec = sl.log_records.add()
        rec.time_unix_nano = t0 + i * 1_000_000
        rec.observed_time_unix_nano = rec.time_unix_nano + 20_000
        info, warn, error = SEVERITY_NUMBER_INFO, SEVERITY_NUMBER_WARN, SEVERITY_NUMBER_ERROR
        severity = rng.choice((info, info, info, warn, error))
        rec.severity_number = severity
        rec.severity_text = {info: "INFO", warn: "WARN", error: "ERROR"}[severity]
        took = rng.randrange(900)
        rec.body.string_value = f"order {rng.randrange(100_000)} processed in {took} ms"
        rec.trace_id = rng.randbytes(8) + suffix
        rec.span_id = rng.randbytes(8)
        rec.flags = 1
        rec.attributes.extend(
            [
                _kv("code.function.name", "process_order"),
                _kv("code.file.path", "/app/checkout/orders.py"),
                _kv("code.line.number", rng.randrange(1, 900)),
                _kv("order.id", rng.randrange(100_000)),
                _kv("customer.tier", rng.choice(("free", "pro", "enterprise"))),
                _kv("retry", rng.random() < 0.1),
            ]
        )
    return req.SerializeToString()


# --- clients -------------------------------------------------------------------------------


@dataclass
class ClientResult:
    requests: int = 0
    acked_items: int = 0
    rejected_items: int = 0
    busy: int = 0
    errors: int = 0
    warmup_items: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)


def client(
    index: int,
    transport: str,
    signal_name: str,
    address: str,
    span_events: int,
    ready: Any,
    start: Any,
    stop_at: Any,
    out: Any,
) -> None:
    """One load-generating process: warm up, wait for the start, send until ``stop_at``."""
    rng = random.Random(index)
    suffix = rng.randbytes(8)
    if signal_name == "traces":
        template = trace_template(rng, suffix, span_events)
    else:
        template = logs_template(rng, suffix)
    assert template.count(suffix) == ITEMS, "the id suffix must occur once per item"
    counter = 0

    def next_body() -> bytes:
        nonlocal counter
        counter += 1
        return template.replace(suffix, bytes([index % 256]) + counter.to_bytes(7, "big"))

    if transport == "grpc":
        method, response_type = GRPC_METHODS[signal_name]
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
        call: grpc.UnaryUnaryMultiCallable[bytes, Message] = channel.unary_unary(
            method, response_deserializer=response_type.FromString
        )

        def send(body: bytes) -> tuple[str, int]:
            try:
                response = call(body, timeout=60)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return "busy", 0
                return f"error {exc.code().name}: {exc.details()}", 0
            return "ok", _rejected(response)
    else:
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        path = HTTP_PATHS[signal_name]
        response_type = GRPC_METHODS[signal_name][1]
        headers = {"Content-Type": "application/x-protobuf"}

        def send(body: bytes) -> tuple[str, int]:
            try:
                conn.request("POST", path, body, headers)
                reply = conn.getresponse()
                data = reply.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # http.client reconnects on the next request
                return f"error {type(exc).__name__}: {exc}", 0
            if reply.status == 200:
                return "ok", _rejected(response_type.FromString(data))
            if reply.status in (429, 503):
                return "busy", 0
            return f"error HTTP {reply.status}: {data[:200]!r}", 0

    result = ClientResult(latencies=[])
    outcome, _ = send(next_body())  # warm-up: connection set up, not measured
    if outcome == "ok":
        result.warmup_items = ITEMS  # acknowledged, so the file must hold it too
    elif outcome != "busy":
        result.first_error = f"warm-up: {outcome}"
    ready.release()
    start.wait()
    deadline = stop_at.value
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        outcome, rejected = send(next_body())
        elapsed = time.perf_counter() - t0
        result.requests += 1
        if outcome == "ok":
            result.acked_items += ITEMS - rejected
            result.rejected_items += rejected
            result.latencies.append(elapsed)
        elif outcome == "busy":
            result.busy += 1
            time.sleep(0.05)
        else:
            result.errors += 1
            result.first_error = result.first_error or outcome
    out.put((index, result, counter))


def _rejected(response: Any) -> int:
    ps = response.partial_success
    return int(getattr(ps, "rejected_spans", 0) or getattr(ps, "rejected_log_records", 0))


# --- the server ----------------------------------------------------------------------------


# --- one scenario --------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    workers: int
    workers_cpu_pct: float
    requests: int
    acked: int
    rate: float
    p50_ms: float
    p99_ms: float
    busy: int
    errors: int
    expected_events: int
    stored_events: int
    rss_mb: float
    cpu_pct: float
    exit_code: int
    server_log_tail: str
    client_errors: list[str]


def run_scenario(name: str, args: argparse.Namespace, db: Path, workers: int | None = None) -> Row:
    """One scenario against a fresh server; ``workers``: its ``ingest.mapping_workers``
    (None: the configured default)."""
    transport, signal_name = SCENARIOS[name]
    if workers is None:
        workers = IngestConfig().mapping_workers
    server = ServerProcess(db=db, env={"HERALD_INGEST__MAPPING_WORKERS": str(workers)})
    profiler = None
    try:
        address = server.grpc if transport == "grpc" else server.http
        ctx = mp.get_context("fork")
        ready, start = ctx.Semaphore(0), ctx.Event()
        stop_at = ctx.Value("d", 0.0)
        out = ctx.Queue()
        procs = [
            ctx.Process(
                target=client,
                args=(
                    i,
                    transport,
                    signal_name,
                    address,
                    args.span_events,
                    ready,
                    start,
                    stop_at,
                    out,
                ),
            )
            for i in range(args.clients)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    args.profile_format,
                    *(["--gil"] if args.profile_gil else []),
                    "-o",
                    str(args.profile / f"{name}.{PROFILE_SUFFIX[args.profile_format]}"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        workers_cpu0 = server.descendants_cpu_seconds()
        stop_at.value = t0 + args.seconds
        start.set()
        results = [out.get(timeout=args.seconds + 120) for _ in procs]
        elapsed = time.monotonic() - t0
        cpu = server.cpu_seconds() - cpu0
        workers_cpu = server.descendants_cpu_seconds() - workers_cpu0
        for p in procs:
            p.join()
        if profiler is not None:
            profiler.wait(timeout=120)
        code = server.stop()
        stored = server.count_events()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    total = ClientResult()
    lats: list[float] = []
    errors: list[str] = []
    for _, r, _ in results:
        total.requests += r.requests
        total.acked_items += r.acked_items
        total.busy += r.busy
        total.errors += r.errors
        total.warmup_items += r.warmup_items
        lats += r.latencies or []
        if r.first_error:
            errors.append(r.first_error)
    lats.sort()
    per_item = 1 + args.span_events if signal_name == "traces" else 1
    return Row(
        scenario=name,
        workers=workers,
        workers_cpu_pct=100 * workers_cpu / elapsed,
        requests=total.requests,
        acked=total.acked_items,
        rate=total.acked_items / elapsed,
        p50_ms=lats[len(lats) // 2] * 1000 if lats else 0.0,
        p99_ms=lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1000 if lats else 0.0,
        busy=total.busy,
        errors=total.errors,
        expected_events=(total.acked_items + total.warmup_items) * per_item,
        stored_events=stored,
        rss_mb=server.max_rss_mb,
        cpu_pct=100 * cpu / elapsed,
        exit_code=code,
        server_log_tail="".join(server.log[-5:]),
        client_errors=errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per scenario")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--span-events", type=int, default=0, help="span events per span")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--mapping-workers",
        default=str(IngestConfig().mapping_workers),
        help="comma-separated ingest.mapping_workers values, each run per scenario (A/B); "
        "default: the configured default",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the A/B alternation")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record a py-spy flame graph of the server per scenario into DIR",
    )
    parser.add_argument(
        "--profile-format",
        choices=sorted(PROFILE_SUFFIX),
        default="flamegraph",
        help="py-spy output format (raw = collapsed stacks, for scripts)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only the thread holding the GIL (where serialized time goes)",
    )
    args = parser.parse_args()
    print_header()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    print(
        f"{os.cpu_count()} CPUs, {args.clients} client processes, {ITEMS} items/request, "
        f"{args.span_events} span events/span, {args.seconds:g} s per scenario"
    )
    workers = [int(w) for w in args.mapping_workers.split(",") if w.strip()]
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="herald-bench-otlp-") as tmp:
        i = 0
        for _ in range(args.rounds):
            for name in names:
                for w in workers:
                    i += 1
                    db = Path(tmp) / f"{i}-{name}-w{w}.duckdb"
                    rows.append(run_scenario(name, args, db, w))
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    header = (
        f"{'scenario':<12} {'workers':>7} {'requests':>8} {'items/s acked':>13} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'busy':>5} {'errors':>6} {'events in file':>15} "
        f"{'check':>5} {'RSS max MB':>10} {'server CPU':>10} {'workers CPU':>11}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for r in rows:
        ok = r.stored_events == r.expected_events and r.exit_code == 0 and not r.errors
        failed |= not ok
        print(
            f"{r.scenario:<12} {r.workers:>7} {r.requests:>8} {r.rate:>13,.0f} {r.p50_ms:>7.1f} "
            f"{r.p99_ms:>7.1f} {r.busy:>5} {r.errors:>6} {r.stored_events:>15,} "
            f"{'ok' if ok else 'FAIL':>5} {r.rss_mb:>10.0f} {r.cpu_pct:>9.0f}% "
            f"{r.workers_cpu_pct:>10.0f}%"
        )
    print(
        "items/s = spans (traces) or log records (logs) answered OK, i.e. committed; "
        "'check' = events in the file after SIGTERM equal the acknowledged ones"
    )
    for r in rows:
        for error in r.client_errors:
            print(f"{r.scenario}: a client saw {error}", file=sys.stderr)
        if r.stored_events != r.expected_events or r.exit_code != 0:
            print(
                f"{r.scenario}: {r.stored_events} events in the file, {r.expected_events} "
                f"acknowledged; server exit code {r.exit_code}; its last lines:\n"
                f"{r.server_log_tail}",
                file=sys.stderr,
            )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
