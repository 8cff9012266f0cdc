"""Native ingest throughput: events/s acknowledged (= committed to the DuckDB file) through the
gRPC `Emit` with batches of 1,000 from several concurrent client processes, plus server RSS.

    .venv/bin/python benchmarks/ingest_native.py --clients 4 --seconds 20

Each client process pre-builds its request bodies (realistic events: 3–6 labels, 0–3 related
resources, a small payload) so the measurement is the server, not JSON encoding in the client.
After the run the server gets SIGTERM and the events in the file are counted: every
acknowledged event must be there.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector._proto import herald_pb2, herald_pb2_grpc

SERVICES = ["checkout", "payments", "inventory", "shipping", "search", "auth"]
VERBS = ["created", "updated", "shipped", "failed", "retried", "completed"]


def make_event(rng: random.Random, event_id: str) -> dict[str, Any]:
    """One realistic native event: a service resource with 1–4 extra labels, 0–3 related
    resources, a small payload (also the soak benchmark's events)."""
    svc = rng.choice(SERVICES)
    labels = {
        "prefect.resource.id": f"app.{svc}.{rng.randrange(10_000)}",
        "prefect.resource.name": f"{svc} {rng.randrange(100)}",
    }
    for k in range(rng.randint(1, 4)):
        labels[f"label.{k}"] = f"value-{rng.randrange(50)}"
    related = [
        {
            "prefect.resource.id": f"app.customer.{rng.randrange(5000)}",
            "prefect.resource.role": rng.choice(["customer", "tenant", "flow"]),
        }
        for _ in range(rng.randint(0, 3))
    ]
    return {
        "event": f"app.{svc}.{rng.choice(VERBS)}",
        "resource": labels,
        "related": related,
        "payload": {"amount": rng.randrange(1000), "currency": "EUR"},
        "id": event_id,
    }


def make_batch(rng: random.Random, size: int) -> bytes:
    return orjson.dumps([make_event(rng, str(uuid.uuid4())) for _ in range(size)])


# What each client process sends back: acked events, busy answers, per-call latencies.
ClientResult = tuple[int, int, list[float]]


def client(
    address: str,
    seconds: float,
    batch: int,
    seed: int,
    out: mp.Queue[ClientResult],
    late_s: float = 0.0,
) -> None:
    """Send ``batch``-event Emits for ``seconds``; with ``late_s`` > 0 every event carries an
    ``occurred`` up to that many seconds before the send (clients that report late), otherwise
    none (the server uses the time it received it)."""
    rng = random.Random(seed)
    # Pre-build distinct bodies; ids are rewritten per send so nothing is deduped away.
    bodies = [orjson.loads(make_batch(rng, batch)) for _ in range(4)]
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = herald_pb2_grpc.HeraldStub(channel)
    acked = busy = 0
    latencies = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        events = bodies[i % len(bodies)]
        i += 1
        now = time.time()
        for ev in events:
            ev["id"] = str(uuid.uuid4())
            if late_s > 0:
                ev["occurred"] = datetime.fromtimestamp(
                    now - rng.random() * late_s, UTC
                ).isoformat()
        payload = orjson.dumps(events)
        t0 = time.perf_counter()
        try:
            reply = stub.Emit(herald_pb2.EmitRequest(events_json=payload), timeout=60)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                busy += 1
                time.sleep(0.05)
                continue
            raise
        latencies.append(time.perf_counter() - t0)
        acked += reply.accepted
    out.put((acked, busy, latencies))


@dataclass
class Run:
    """What the clients of one run saw."""

    acked: int
    busy: int
    latencies: list[float]  # seconds per acknowledged call, sorted
    elapsed: float

    @property
    def per_second(self) -> float:
        return self.acked / self.elapsed

    def latency_ms(self, q: float) -> float:
        lats = self.latencies
        return lats[min(len(lats) - 1, int(len(lats) * q))] * 1000 if lats else 0.0


def run_clients(
    address: str | list[str], clients: int, seconds: float, batch: int, late_s: float = 0.0
) -> Run:
    """``clients`` processes running ``client`` at once, against ``address`` (round-robin
    over the addresses when given several)."""
    addresses = [address] if isinstance(address, str) else address
    out: mp.Queue[ClientResult] = mp.Queue()
    procs = [
        mp.Process(
            target=client, args=(addresses[s % len(addresses)], seconds, batch, s, out, late_s)
        )
        for s in range(clients)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join()
    return Run(
        acked=sum(r[0] for r in results),
        busy=sum(r[1] for r in results),
        latencies=sorted(x for r in results for x in r[2]),
        elapsed=elapsed,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    print_header()

    server = ServerProcess()
    try:
        run = run_clients(server.grpc, args.clients, args.seconds, args.batch)
        acked = run.acked
        code = server.stop()
        stored = server.count_events()
        print(f"clients={args.clients} batch={args.batch} seconds={run.elapsed:.1f}")
        print(f"acknowledged events      {acked}")
        print(f"events/s acknowledged    {run.per_second:,.0f}")
        print(
            f"request latency p50/p99  {run.latency_ms(0.5):.1f} ms / {run.latency_ms(0.99):.1f} ms"
        )
        print(f"busy answers (retried)   {run.busy}")
        print(f"server max RSS           {server.max_rss_mb:.0f} MB")
        print(f"stored after SIGTERM     {stored} (exit code {code})")
        if stored < acked:
            print("ERROR: acknowledged events are missing from the store")
            sys.exit(1)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
