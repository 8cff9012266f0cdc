"""Automation latency under load: reactive (event acknowledged → webhook received) p50/p99 and
proactive lateness (window end → webhook received), with 100 automations loaded and a steady
background load of native events from separate client processes.

    .venv/bin/python benchmarks/automations.py --rate 10000 --seconds 30

Setup: `herald serve` as a subprocess; a webhook receiver in this process (127.0.0.1, port 0).
Automations: one reactive probe (`bench.probe` → webhook), one proactive heartbeat trigger
(`bench.pulse`, fires 10 s after a worker's last pulse → webhook), 10 that match the
background traffic but never reach their threshold (so every background event of theirs is
evaluated), and 88 that match nothing. Background: `--clients` processes emitting batches of
`--batch` events at `--rate` events/s in total. Probes: one `bench.probe` event every
`--probe-interval` s through its own gRPC `Emit`; its latency is the webhook's arrival time
minus the moment `Emit` returned (same machine, same clock). Proactive: `--workers` workers
each send one pulse, staggered by 1 s; lateness = webhook arrival − (pulse occurred + 10 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector._proto import herald_pb2, herald_pb2_grpc
from collector.client.automations import AutomationsClient
from collector.domain.events import format_time

SERVICES = ["checkout", "payments", "inventory", "shipping", "search", "auth"]
VERBS = ["created", "updated", "shipped", "failed", "retried", "completed"]
PROACTIVE_WITHIN = 10.0


class Receiver:
    """Webhook receiver: records (path, JSON body, arrival wall time)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                with receiver.lock:
                    receiver.calls.append((self.path, json.loads(body), arrived))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[str, dict[str, Any], float]]:
        with self.lock:
            return [c for c in self.calls if c[0] == path]


def background(
    address: str,
    rate: float,
    batch: int,
    seconds: float,
    seed: int,
    out: mp.Queue[tuple[int, int, float]],  # events sent, busy answers, seconds taken
) -> None:
    """Emit `rate` events/s in batches until `seconds` have passed."""
    rng = random.Random(seed)
    stub = herald_pb2_grpc.HeraldStub(grpc.insecure_channel(address))
    # Pre-built batches; each send only stamps fresh ids and the time, so the client keeps up.
    bodies = [
        [
            {
                "event": f"app.{svc}.{rng.choice(VERBS)}",
                "resource": {
                    "prefect.resource.id": f"app.{svc}.{rng.randrange(10_000)}",
                    "region": rng.choice(["eu", "us"]),
                },
                "related": [
                    {
                        "prefect.resource.id": f"app.customer.{rng.randrange(5000)}",
                        "prefect.resource.role": "customer",
                    }
                ],
                "payload": {"amount": rng.randrange(1000)},
            }
            for svc in (rng.choice(SERVICES) for _ in range(batch))
        ]
        for _ in range(8)
    ]
    prefix = uuid.uuid4().hex[:12]
    counter = 0
    interval = batch / rate
    sent = busy = 0
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < seconds:
        events = bodies[counter % len(bodies)]
        now = format_time(datetime.now(UTC))
        for ev in events:
            counter += 1
            ev["occurred"] = now
            ev["id"] = f"{prefix[:8]}-{prefix[8:12]}-4000-8000-{counter:012x}"
        try:
            reply = stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps(events)), timeout=60)
            sent += reply.accepted
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            busy += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out.put((sent, busy, time.monotonic() - start))


def create_automations(address: str, hook: str) -> None:
    with AutomationsClient(address, timeout=60) as client:
        client.create(
            {
                "name": "probe",
                "trigger": {"expect": ["bench.probe"]},
                "actions": [
                    {
                        "type": "call-webhook",
                        "url": f"{hook}/reactive",
                        "body": '{"probe": "{{ event.payload.probe }}"}',
                    }
                ],
                # Probes come 10 a second: past the default rate limit for webhooks.
                "rate_limit": "off",
            }
        )
        client.create(
            {
                "name": "pulse",
                "trigger": {
                    "posture": "Proactive",
                    "after": ["bench.pulse"],
                    "expect": ["bench.pulse"],
                    "for_each": ["prefect.resource.id"],
                    "within": PROACTIVE_WITHIN,
                },
                "actions": [
                    {
                        "type": "call-webhook",
                        "url": f"{hook}/proactive",
                        "body": '{"worker": "{{ labels[\'prefect.resource.id\'] }}", '
                        '"last": "{{ event.occurred }}"}',
                    }
                ],
                "rate_limit": "off",  # one firing per worker, maybe more than the default
            }
        )
        for i in range(10):  # evaluated on background traffic, never firing
            svc = SERVICES[i % len(SERVICES)]
            client.create(
                {
                    "name": f"busy-{i}",
                    "trigger": {
                        "expect": [f"app.{svc}.*"],
                        "match": {"region": "eu"},
                        "threshold": 10_000_000,
                        "within": 60,
                        "for_each": ["region"],
                    },
                    "actions": [{"type": "do-nothing"}],
                }
            )
        for i in range(88):
            client.create(
                {
                    "name": f"idle-{i}",
                    "trigger": {"expect": [f"bench.idle.{i}"]},
                    "actions": [{"type": "do-nothing"}],
                }
            )
        assert len(client.list()) == 100


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000, help="background events/s")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seconds", type=float, default=20, help="measurement time")
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--probe-interval", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=8, help="proactive samples")
    ap.add_argument("--log-level", default="WARNING", help="the server's (DEBUG: step timings)")
    ap.add_argument("--server-log", type=Path, help="write the server's log here")
    args = ap.parse_args()
    print_header()

    hook = Receiver()
    server = ServerProcess(env={"HERALD_LOGGING__LEVEL": args.log_level})
    try:
        create_automations(server.grpc, hook.url)
        out: mp.Queue[tuple[int, int, float]] = mp.Queue()
        total = args.warmup + args.seconds + PROACTIVE_WITHIN + 3
        procs = [
            mp.Process(
                target=background,
                args=(server.grpc, args.rate / args.clients, args.batch, total, s, out),
            )
            for s in range(args.clients)
        ]
        cpu0 = server.cpu_seconds()
        for p in procs:
            p.start()
        time.sleep(args.warmup)

        stub = herald_pb2_grpc.HeraldStub(grpc.insecure_channel(server.grpc))
        acked: dict[str, float] = {}
        pulses: dict[str, datetime] = {}
        started = time.monotonic()
        next_pulse = started + 1.0
        while time.monotonic() - started < args.seconds:
            probe = str(uuid.uuid4())
            event = {
                "event": "bench.probe",
                "resource": {"prefect.resource.id": "bench.p"},
                "payload": {"probe": probe},
                "id": str(uuid.uuid4()),
            }
            stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps([event])), timeout=30)
            acked[probe] = time.time()
            if len(pulses) < args.workers and time.monotonic() >= next_pulse:
                worker = f"bench.worker.{len(pulses)}"
                occurred = datetime.now(UTC)
                pulse = {
                    "event": "bench.pulse",
                    "resource": {"prefect.resource.id": worker},
                    "occurred": format_time(occurred),
                    "id": str(uuid.uuid4()),
                }
                stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps([pulse])), timeout=30)
                pulses[worker] = occurred
                next_pulse += 1.0
            time.sleep(args.probe_interval)
        # the last proactive windows end PROACTIVE_WITHIN after their pulse
        deadline = time.monotonic() + PROACTIVE_WITHIN + 5
        while len(hook.on("/proactive")) < len(pulses) and time.monotonic() < deadline:
            time.sleep(0.1)
        while len(hook.on("/reactive")) < len(acked) and time.monotonic() < deadline:
            time.sleep(0.1)
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        cpu = server.cpu_seconds() - cpu0

        reactive = [
            (arrived - acked[body["probe"]]) * 1000
            for _, body, arrived in hook.on("/reactive")
            if body["probe"] in acked
        ]
        proactive = []
        for _, body, arrived in hook.on("/proactive"):
            end = pulses[body["worker"]] + timedelta(seconds=PROACTIVE_WITHIN)
            proactive.append((arrived - end.timestamp()) * 1000)
        sent = sum(r[0] for r in results)
        busy = sum(r[1] for r in results)
        elapsed = max(r[2] for r in results)
        code = server.stop()
        if args.server_log:
            args.server_log.write_text("".join(server.log))
        print("automations loaded        100 (1 reactive probe, 1 proactive, 10 busy, 88 idle)")
        print(
            f"background load           {sent / elapsed:,.0f} events/s acknowledged "
            f"({args.clients} client processes, batches of {args.batch}, {busy} busy answers)"
        )
        print(
            f"server CPU                {cpu / elapsed:.2f} cores; max RSS "
            f"{server.max_rss_mb:.0f} MB"
        )
        print(f"reactive probes           {len(reactive)} of {len(acked)} reached the webhook")
        worst = max(reactive, default=float("nan"))
        print(
            f"reactive ack → webhook    p50 {pct(reactive, 0.5):.1f} ms   "
            f"p99 {pct(reactive, 0.99):.1f} ms   max {worst:.1f} ms"
        )
        print(f"proactive firings         {len(proactive)} of {len(pulses)}")
        print(
            f"proactive window end → webhook  p50 {pct(proactive, 0.5):.0f} ms   "
            f"max {max(proactive, default=float('nan')):.0f} ms"
        )
        print(f"server exit code          {code}")
    finally:
        server.cleanup()
        hook.server.shutdown()
        hook.server.server_close()


if __name__ == "__main__":
    main()
