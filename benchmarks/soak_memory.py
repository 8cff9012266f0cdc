"""Memory under a sustained overload soak: a real ``herald serve`` is sent more native ``Emit``
and OTLP export requests than it can take for ``--seconds`` (default 300), and its RSS is
sampled every second.

    .venv/bin/python benchmarks/soak_memory.py [--seconds 300] [--native 2] [--otlp-grpc 2]
        [--otlp-http 1] [--inflight 8] [--env HERALD_SERVER__MEMORY_BUDGET_BYTES=300MiB]

Every client process keeps ``--inflight`` requests in flight (one thread each, no pause after
an answer): native ``Emit`` calls of 1,000 events, OTLP/gRPC trace exports of 512 spans, or
OTLP/HTTP trace exports of 512 spans. A busy answer (gRPC ``UNAVAILABLE``, HTTP 503/429) is
counted and retried after 50 ms, as an exporter would; anything else (a 500, ``UNKNOWN``,
``INTERNAL``) is an error and fails the run. Every request carries new ids (a ``bytes.replace``
on a pre-built body), so nothing is deduplicated away.

Printed: RSS over time (min / p50 / max per 30 s window), the server's ingest-queue and
in-flight gauges from ``/metrics`` at the end of each window, events acknowledged vs events in
the file after SIGTERM (must be equal), busy answers, errors, the exact command and the machine.
Exit status 1 when an acknowledged event is missing, an error was seen, or ``--max-rss-mb`` was
exceeded.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import platform
import random
import re
import shlex
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._server import ServerProcess
from benchmarks.ingest_native import make_event
from benchmarks.ingest_otlp import ITEMS, trace_template
from collector._proto import herald_pb2, herald_pb2_grpc

NATIVE_BATCH = 1000
WINDOW_SECONDS = 30
BUSY_BACKOFF_SECONDS = 0.05
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Stands for the per-send part of every event id in a native body (8 hex digits).
ID_SLOT = b"5e4d5e4d"


def native_template(rng: random.Random, client: int) -> bytes:
    """1,000 realistic events whose ids are ``ID_SLOT-<client>-4000-8000-<n>``: replacing
    ``ID_SLOT`` with a per-send counter makes every id new without re-encoding."""
    events = [
        make_event(rng, f"{ID_SLOT.decode()}-{client:04x}-4000-8000-{n:012x}")
        for n in range(NATIVE_BATCH)
    ]
    body = orjson.dumps(events)
    assert body.count(ID_SLOT) == NATIVE_BATCH
    return body


@dataclass
class Tally:
    """One client process's counts (summed over its threads)."""

    kind: str
    acked: int = 0  # events (native) or spans (OTLP) acknowledged
    busy: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)


def _client(kind: str, index: int, address: str, inflight: int, stop_at: float, out: Any) -> None:
    """One load-generating process: ``inflight`` threads sending until ``stop_at``."""
    rng = random.Random(index)
    lock = threading.Lock()
    tally = Tally(kind)
    counter = [0]

    def next_counter() -> int:
        with lock:
            counter[0] += 1
            return counter[0]

    if kind == "native":
        template = native_template(rng, index)
        channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = herald_pb2_grpc.HeraldStub(channel)

        def send() -> tuple[str, int]:
            body = template.replace(ID_SLOT, f"{next_counter():08x}".encode())
            try:
                reply = stub.Emit(herald_pb2.EmitRequest(events_json=body), timeout=60)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return "busy", 0
                return f"gRPC {exc.code().name}: {exc.details()}", 0
            if reply.errors:
                return f"item errors: {reply.errors[0]}", int(reply.accepted)
            return "ok", int(reply.accepted)

    else:
        suffix = rng.randbytes(8)
        template = trace_template(rng, suffix, 0)
        assert template.count(suffix) == ITEMS

        def body() -> bytes:
            # A distinct first byte per process keeps ids apart across processes.
            return template.replace(
                suffix, bytes([index % 256]) + next_counter().to_bytes(7, "big")
            )

        if kind == "otlp-grpc":
            channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
            export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse]
            export = channel.unary_unary(
                TRACE_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
            )

            def send() -> tuple[str, int]:
                try:
                    reply = export(body(), timeout=60)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        return "busy", 0
                    return f"gRPC {exc.code().name}: {exc.details()}", 0
                return "ok", ITEMS - int(reply.partial_success.rejected_spans)

        else:
            host, port = address.rsplit(":", 1)
            local = threading.local()

            def send() -> tuple[str, int]:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    conn.request(
                        "POST", "/v1/traces", body(), {"Content-Type": "application/x-protobuf"}
                    )
                    reply = conn.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    local.conn = None
                    return f"HTTP {type(exc).__name__}: {exc}", 0
                if reply.status in (429, 503):
                    return "busy", 0
                if reply.status != 200:
                    return f"HTTP {reply.status}: {data[:200]!r}", 0
                rejected = ExportTraceServiceResponse.FromString(data).partial_success
                return "ok", ITEMS - int(rejected.rejected_spans)

    def worker() -> None:
        while time.time() < stop_at:
            t0 = time.perf_counter()
            outcome, acked = send()
            took = time.perf_counter() - t0
            with lock:
                tally.acked += acked
                if outcome == "ok":
                    tally.latencies.append(took)
                elif outcome == "busy":
                    tally.busy += 1
                else:
                    tally.errors += 1
                    tally.first_error = tally.first_error or outcome
            if outcome == "busy":
                time.sleep(BUSY_BACKOFF_SECONDS)

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(tally)


def _metrics(http_address: str) -> dict[str, float]:
    """The server's unlabelled gauges from /metrics (empty if it did not answer)."""
    try:
        with urllib.request.urlopen(f"http://{http_address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"(herald_[a-z_]+) ([0-9.e+-]+)", line):
            found[m.group(1)] = float(m.group(2))
    return found


def descendants_rss_mb(pid: int) -> float:
    """RSS of the processes under ``pid`` (OTLP mapping workers, their fork server), in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1]) / 1024
    total = 0.0
    for child in parents:
        up = parents.get(child)
        while up is not None and up != pid and up > 1:
            up = parents.get(up)
        if up == pid:
            total += rss.get(child, 0.0)
    return total


def _disk_mb(path: Path) -> float:
    """Size of a file, or of the files in a directory, in MB (0 if there is none)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return path.stat().st_size / 2**20 if path.exists() else 0.0


def machine() -> str:
    mem = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}){mem}, Python {platform.python_version()}"
        f", load average at start {load}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300, help="how long the overload lasts")
    ap.add_argument("--native", type=int, default=2, help="native gRPC Emit client processes")
    ap.add_argument("--otlp-grpc", type=int, default=2, help="OTLP/gRPC trace client processes")
    ap.add_argument("--otlp-http", type=int, default=1, help="OTLP/HTTP trace client processes")
    ap.add_argument("--inflight", type=int, default=8, help="requests in flight per process")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the server (a config key), repeatable",
    )
    ap.add_argument(
        "--max-rss-mb", type=float, default=0, help="fail when RSS ever exceeds this (0: no)"
    )
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)

    print(
        "command: " + shlex.join([".venv/bin/python", "benchmarks/soak_memory.py", *sys.argv[1:]])
    )
    print("machine: " + machine())
    server = ServerProcess(env=env)
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    children: list[float] = []  # RSS of the server's child processes (mapping workers), MB
    gauges: list[tuple[int, dict[str, float]]] = []
    try:
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        start = time.time()
        stop_at = start + args.seconds
        plan = (
            [("native", server.grpc)] * args.native
            + [("otlp-grpc", server.grpc)] * args.otlp_grpc
            + [("otlp-http", server.http)] * args.otlp_http
        )
        procs = [
            ctx.Process(target=_client, args=(kind, i, address, args.inflight, stop_at, out))
            for i, (kind, address) in enumerate(plan)
        ]
        for p in procs:
            p.start()
        window = 0
        while (now := time.time()) < stop_at:
            samples.append((now - start, server.rss_mb()))
            children.append(descendants_rss_mb(server.proc.pid))
            if int((now - start) // WINDOW_SECONDS) > window:
                gauges.append((window, _metrics(server.http)))
                window += 1
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        gauges.append((window, _metrics(server.http)))
        tallies: list[Tally] = [out.get(timeout=180) for _ in procs]
        for p in procs:
            p.join()
        rss_at_end = server.rss_mb()
        spilled = _disk_mb(Path(f"{server.db}.tmp"))  # DuckDB's temporary files, under load
        code = server.stop()
        stored = server.count_events()
        file_mb = _disk_mb(server.db)
    finally:
        server.cleanup()

    print(f"\nRSS of the server, sampled every second ({len(samples)} samples):")
    print(
        f"{'window':>12} {'min MB':>7} {'p50 MB':>7} {'max MB':>7}  "
        "queue events / bytes, gRPC bytes"
    )
    by_window: dict[int, list[float]] = {}
    for at, rss in samples:
        by_window.setdefault(int(at // WINDOW_SECONDS), []).append(rss)
    gauge_at = dict(gauges)
    for w, values in sorted(by_window.items()):
        g = gauge_at.get(w, {})
        extra = (
            f"{g.get('herald_ingest_queue_events', 0):,.0f} / "
            f"{g.get('herald_ingest_queue_bytes', 0) / 2**20:.1f} MiB, "
            f"{g.get('herald_grpc_inflight_bytes', 0) / 2**20:.1f} MiB"
            if g
            else "-"
        )
        print(
            f"{w * WINDOW_SECONDS:>5}-{(w + 1) * WINDOW_SECONDS:<4} s "
            f"{min(values):>7.0f} {statistics.median(values):>7.0f} {max(values):>7.0f}  {extra}"
        )
    peak = max((rss for _, rss in samples), default=0.0)
    print(f"whole run: max {peak:.0f} MB; at the end of the load {rss_at_end:.0f} MB")
    if any(children):
        both = max(rss + kids for (_, rss), kids in zip(samples, children, strict=True))
        print(
            f"its child processes (OTLP mapping workers): max {max(children):.0f} MB; "
            f"server + children: max {both:.0f} MB"
        )
    print(f"store file {file_mb:.0f} MB; DuckDB temporary files at the end {spilled:.0f} MB")

    acked = sum(t.acked for t in tallies)
    busy = sum(t.busy for t in tallies)
    errors = sum(t.errors for t in tallies)
    print()
    for kind in ("native", "otlp-grpc", "otlp-http"):
        mine = [t for t in tallies if t.kind == kind]
        if not mine:
            continue
        lats = sorted(x for t in mine for x in t.latencies)
        p99 = lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1000 if lats else 0.0
        print(
            f"{kind:<10} {len(mine)} proc x {args.inflight}: acknowledged "
            f"{sum(t.acked for t in mine):,} ({sum(t.acked for t in mine) / args.seconds:,.0f}/s), "
            f"busy {sum(t.busy for t in mine):,}, errors {sum(t.errors for t in mine)}, "
            f"p99 {p99:.0f} ms"
        )
    print(f"acknowledged events      {acked:,}")
    print(f"stored after SIGTERM     {stored:,} (exit code {code})")
    print(f"busy answers             {busy:,}")
    print(f"errors                   {errors}")
    failed = False
    for t in tallies:
        if t.first_error:
            print(f"ERROR ({t.kind}): {t.first_error}")
            failed = True
    if stored != acked:
        print("ERROR: events in the file differ from the acknowledged ones")
        failed = True
    if code != 0:
        print(f"ERROR: the server exited with {code}:\n{''.join(server.log[-10:])}")
        failed = True
    if args.max_rss_mb and peak > args.max_rss_mb:
        print(f"ERROR: RSS reached {peak:.0f} MB, over --max-rss-mb {args.max_rss_mb:.0f}")
        failed = True
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
