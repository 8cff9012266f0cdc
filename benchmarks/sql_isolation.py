"""User SQL against everything else: reactive webhook latency and feed page latency, idle and
while heavy SQL queries run; how far past its time limit a query is answered; server RSS for
a query that builds one huge value.

    .venv/bin/python benchmarks/sql_isolation.py [--concurrency N] [--rounds 3] [--seconds 10]

Setup: `herald serve` as a subprocess (`--sql-timeout` s time limit, `--concurrency` sets
`query.sql_concurrency` when given), 20,000 stored events, one reactive automation
(`bench.probe` → webhook to a receiver in this process). A probe is one `bench.probe` event
through its own gRPC `Emit` every `--probe-interval` s; its latency is the webhook's arrival
minus the moment `Emit` returned. A feed page is one `QueryEvents` (50 events, a name filter)
every `--probe-interval` s.

Phases, alternating `--rounds` times: idle (nothing else runs); `--burners` processes
spinning at `nice -n 19` with no SQL at all (the reference: what any CPU-bound neighbour
costs on this machine, whatever its priority); `--heavy` client threads each running
`SELECT count(*) FROM range(1000000000000)` over the unary `Sql` RPC back to back (each one
runs until the time limit stops it; a busy answer is retried after its hint). Then, alone: the
time from sending to the answer for `range(1e12)` and `repeat('x', 1e9)` against the time
limit, and the server's peak RSS during the `repeat` query.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from benchmarks.automations import Receiver, pct
from collector._proto import herald_pb2, herald_pb2_grpc
from collector.client.automations import AutomationsClient

HEAVY = "SELECT count(*) FROM range(1000000000000)"
HUGE_VALUE = "SELECT repeat('x', 1000000000)"


def seed(stub: herald_pb2_grpc.HeraldStub, n: int) -> None:
    for start in range(0, n, 1000):
        events = [
            {
                "event": f"app.order.{['created', 'paid', 'shipped'][i % 3]}",
                "resource": {"prefect.resource.id": f"app.order.{i}"},
                "payload": {"n": i},
                "id": str(uuid.uuid4()),
            }
            for i in range(start, min(n, start + 1000))
        ]
        stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps(events)), timeout=60)


class Heavy:
    """``n`` threads running the heavy query back to back until ``stop()``."""

    def __init__(self, address: str, n: int) -> None:
        self.stub = herald_pb2_grpc.HeraldStub(grpc.insecure_channel(address))
        self.outcomes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.running = 0
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self.running += 1
            try:
                self.stub.Sql(herald_pb2.SqlRequest(sql=HEAVY), timeout=120)
                outcome = "finished"
            except grpc.RpcError as exc:
                outcome = exc.code().name
            with self.lock:
                self.running -= 1
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if outcome == "UNAVAILABLE":
                self._stop.wait(1.0)  # the server's retry hint

    def stop(self) -> None:
        self._stop.set()


def measure(
    stub: herald_pb2_grpc.HeraldStub, hook: Receiver, seconds: float, interval: float
) -> tuple[list[float], list[float]]:
    """Probe → webhook latencies and feed page latencies (ms) over ``seconds``."""
    acked: dict[str, float] = {}
    feed: list[float] = []
    started = time.monotonic()
    filter_json = orjson.dumps({"event": {"prefix": ["app.order."]}})
    while time.monotonic() - started < seconds:
        probe = str(uuid.uuid4())
        event = {
            "event": "bench.probe",
            "resource": {"prefect.resource.id": "bench.p"},
            "payload": {"probe": probe},
            "id": str(uuid.uuid4()),
        }
        stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps([event])), timeout=60)
        acked[probe] = time.time()
        t = time.monotonic()
        stub.QueryEvents(herald_pb2.QueryRequest(filter_json=filter_json, limit=50), timeout=60)
        feed.append((time.monotonic() - t) * 1000)
        time.sleep(interval)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum(1 for _, body, _ in hook.on("/reactive") if body["probe"] in acked) == len(acked):
            break
        time.sleep(0.05)
    reactive = [
        (arrived - acked[body["probe"]]) * 1000
        for _, body, arrived in hook.on("/reactive")
        if body["probe"] in acked
    ]
    return reactive, feed


def timed_sql(stub: herald_pb2_grpc.HeraldStub, sql: str) -> tuple[float, str]:
    t = time.monotonic()
    try:
        stub.Sql(herald_pb2.SqlRequest(sql=sql), timeout=300)
        outcome = "finished"
    except grpc.RpcError as exc:
        outcome = f"{exc.code().name}: {exc.details()}"
    return time.monotonic() - t, outcome


def line(label: str, values: list[float]) -> str:
    return (
        f"{label:<42} p50 {pct(values, 0.5):6.1f} ms  p95 {pct(values, 0.95):6.1f} ms  "
        f"p99 {pct(values, 0.99):6.1f} ms  "
        f"max {max(values, default=float('nan')):6.1f} ms  (n={len(values)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heavy", type=int, default=8, help="client threads running heavy SQL")
    ap.add_argument("--concurrency", type=int, help="query.sql_concurrency (default: Herald's)")
    ap.add_argument("--sql-timeout", type=float, default=10.0, help="query.sql_timeout_seconds")
    ap.add_argument("--seconds", type=float, default=10, help="each measured phase")
    ap.add_argument("--rounds", type=int, default=3, help="idle + heavy phase pairs")
    ap.add_argument("--probe-interval", type=float, default=0.1)
    ap.add_argument("--skip-huge", action="store_true", help="skip the repeat('x', 1e9) query")
    ap.add_argument(
        "--burners",
        type=int,
        default=2,
        help="reference phase: this many `nice -n 19` CPU-spinning processes, no SQL (0: skip)",
    )
    args = ap.parse_args()
    print_header()

    env = {
        "HERALD_LOGGING__LEVEL": "WARNING",
        "HERALD_QUERY__SQL_TIMEOUT_SECONDS": str(args.sql_timeout),
        # every probe fires its webhook (no default rate limit on the probe automation)
        "HERALD_AUTOMATIONS__RATE_LIMIT_MAX_FIRINGS": "0",
    }
    if args.concurrency:
        env["HERALD_QUERY__SQL_CONCURRENCY"] = str(args.concurrency)
    hook = Receiver()
    server = ServerProcess(env=env)
    try:
        stub = herald_pb2_grpc.HeraldStub(
            grpc.insecure_channel(
                server.grpc, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            )
        )
        seed(stub, 20_000)
        with AutomationsClient(server.grpc, timeout=60) as client:
            client.create(
                {
                    "name": "probe",
                    "trigger": {"expect": ["bench.probe"]},
                    "actions": [
                        {
                            "type": "call-webhook",
                            "url": f"{hook.url}/reactive",
                            "body": '{"probe": "{{ event.payload.probe }}"}',
                        }
                    ],
                }
            )
        measure(stub, hook, 2, args.probe_interval)  # warm-up
        # Idle and heavy phases alternate, so load from outside (a shared machine) falls on
        # both alike.
        results: dict[str, tuple[list[float], list[float]]] = {
            "idle": ([], []),
            "heavy": ([], []),
            "burn": ([], []),
        }
        outcomes: dict[str, int] = {}
        for _ in range(args.rounds):
            reactive, feed = measure(stub, hook, args.seconds, args.probe_interval)
            results["idle"][0].extend(reactive)
            results["idle"][1].extend(feed)
            if args.burners:
                # The reference: processes spinning at the lowest CPU priority, no SQL at all.
                burners = [
                    subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
                    for _ in range(args.burners)
                ]
                try:
                    reactive, feed = measure(stub, hook, args.seconds, args.probe_interval)
                finally:
                    for b in burners:
                        b.kill()
                        b.wait()
                results["burn"][0].extend(reactive)
                results["burn"][1].extend(feed)
            heavy = Heavy(server.grpc, args.heavy)
            time.sleep(2)  # every heavy thread has sent its first query
            reactive, feed = measure(stub, hook, args.seconds, args.probe_interval)
            heavy.stop()
            results["heavy"][0].extend(reactive)
            results["heavy"][1].extend(feed)
            for t in heavy.threads:
                t.join(timeout=args.sql_timeout + 30)
            for outcome, n in heavy.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + n

        overshoot = timed_sql(stub, HEAVY)
        huge: tuple[float, str] | None = None
        rss_before = server.rss_mb()
        if not args.skip_huge:
            server.max_rss_mb = 0.0
            huge = timed_sql(stub, HUGE_VALUE)
            # the statement may go on inside DuckDB after the answer: let the RSS sampler see it
            time.sleep(15)
        peak = server.max_rss_mb

        print(
            f"sql_timeout_seconds {args.sql_timeout:g}; sql_concurrency "
            f"{args.concurrency or 'default'}; {args.heavy} client threads running `{HEAVY}`; "
            f"{args.rounds} rounds of {args.seconds:g} s idle + {args.seconds:g} s heavy"
        )
        burn = f"{args.burners} nice-19 burners"
        print(line("reactive ack → webhook, idle", results["idle"][0]))
        print(line("reactive ack → webhook, heavy SQL", results["heavy"][0]))
        if args.burners:
            print(line(f"reactive ack → webhook, {burn}", results["burn"][0]))
        print(line("feed page (QueryEvents), idle", results["idle"][1]))
        print(line("feed page (QueryEvents), heavy SQL", results["heavy"][1]))
        if args.burners:
            print(line(f"feed page (QueryEvents), {burn}", results["burn"][1]))
        print(f"heavy SQL outcomes                         {dict(sorted(outcomes.items()))}")
        print(
            f"range(1e12) alone                          answered after {overshoot[0]:.2f} s "
            f"({overshoot[0] - args.sql_timeout:+.2f} s past the limit): {overshoot[1][:90]}"
        )
        if huge is not None:
            print(
                f"repeat('x', 1e9) alone                     answered after {huge[0]:.2f} s "
                f"({huge[0] - args.sql_timeout:+.2f} s past the limit): {huge[1][:90]}"
            )
            print(
                f"server RSS                                 {rss_before:.0f} MB before, peak "
                f"{peak:.0f} MB during/after repeat('x', 1e9)"
            )
        print(f"server exit code                           {server.stop()}")
    finally:
        server.cleanup()
        hook.server.shutdown()


if __name__ == "__main__":
    main()
