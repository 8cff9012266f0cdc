"""The automations leader of a lake cluster: reactive latency through any collector, and what a
SIGKILL of the leader costs (takeover time, and the gap until a new event's webhook arrives).

    .venv/bin/python benchmarks/cluster_leader.py --probes 30 --kills 3

Setup: a real PostgreSQL (collector.testing.postgres_server) holding the DuckLake catalog and the
automations state, a temporary data path, three `herald serve` on the lake with the default
intervals (storage.lake_follow_interval_seconds 0.25, automations.evaluation_interval_seconds 1),
one reactive automation (`bench.probe` → webhook to a receiver in this process) and a light
background load (50-event batches of other events, round-robin, from one thread).

Latency: a probe is POSTed to the collectors in turn; latency = webhook arrival − the POST's
acknowledgement (same clock). Failover: the leader (holder in herald.leadership) is killed with
SIGKILL; takeover = until the term rises; gap = until the webhook of the first probe sent after
the kill arrives (probes every 0.1 s to a survivor). A fresh collector replaces the killed one.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector.client.automations import AutomationsClient
from collector.testing import PostgresServer, postgres_server


class Receiver:
    """Webhook receiver on 127.0.0.1:0: event id → first arrival time (monotonic)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.calls = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.monotonic()
                with receiver.lock:
                    receiver.calls += 1
                    receiver.arrived.setdefault(json.loads(body)["event"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, event_id: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if event_id in self.arrived:
                    return self.arrived[event_id]
            time.sleep(0.005)
        raise TimeoutError(f"no webhook for {event_id}")


def post(node: ServerProcess, events: list[dict[str, Any]]) -> bool:
    try:
        reply = httpx.post(f"http://{node.http}/api/events", json=events, timeout=10)
    except httpx.HTTPError:
        return False
    return reply.status_code == 204


def event(name: str) -> dict[str, Any]:
    return {"event": name, "resource": {"prefect.resource.id": "bench"}, "id": str(uuid.uuid4())}


def leader(pg: PostgresServer, dbname: str) -> tuple[int, int]:
    term, holder = pg.psql("SELECT term, holder FROM herald.leadership", dbname).strip().split("|")
    return int(term), int(holder.rsplit(":", 1)[1]) if holder else 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    print_header()
    receiver = Receiver()
    with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="herald-cluster-") as tmp:
        dbname = pg.create_database()
        env = {
            "HERALD_STORAGE__BACKEND": "ducklake",
            "HERALD_STORAGE__CATALOG": pg.catalog(dbname),
            "HERALD_STORAGE__DATA_PATH": str(Path(tmp) / "lake"),
            "HERALD_SERVER__DRAIN_DELAY_SECONDS": "0",
        }
        counter = iter(range(1_000_000))

        def start() -> ServerProcess:
            return ServerProcess(db=Path(tmp) / f"c{next(counter)}.duckdb", env=env)

        nodes = [start() for _ in range(3)]
        stop = threading.Event()

        def background() -> None:
            i = 0
            while not stop.is_set():
                post(nodes[i % len(nodes)], [event("bench.other") for _ in range(50)])
                i += 1
                time.sleep(0.05)

        try:
            while leader(pg, dbname)[1] == 0:
                time.sleep(0.1)
            with AutomationsClient(nodes[0].grpc) as client:
                client.create(
                    {
                        "name": "probe",
                        "trigger": {"expect": ["bench.probe"]},
                        "rate_limit": "off",
                        "actions": [
                            {
                                "type": "call-webhook",
                                "url": f"{receiver.url}/probe",
                                "body": '{"event": "{{ event.id }}"}',
                            }
                        ],
                    }
                )
            time.sleep(2.0)  # the leader takes the new automation within a second
            threading.Thread(target=background, daemon=True).start()

            latencies: list[float] = []
            for i in range(args.probes):
                probe = event("bench.probe")
                assert post(nodes[i % len(nodes)], [probe])
                acked = time.monotonic()
                latencies.append(receiver.wait(probe["id"]) - acked)
                time.sleep(0.1)

            takeovers: list[float] = []
            gaps: list[float] = []
            for _ in range(args.kills):
                term, pid = leader(pg, dbname)
                victim = next(n for n in nodes if n.proc.pid == pid)
                nodes.remove(victim)
                killed = time.monotonic()
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                sent: list[str] = []
                taken: float | None = None
                first: float | None = None
                while first is None:
                    probe = event("bench.probe")
                    if post(nodes[len(sent) % len(nodes)], [probe]):
                        sent.append(probe["id"])
                    if taken is None and leader(pg, dbname)[0] > term:
                        taken = time.monotonic() - killed
                    with receiver.lock:
                        hits = [receiver.arrived[s] for s in sent if s in receiver.arrived]
                    if hits:
                        first = min(hits) - killed
                    time.sleep(0.1)
                for probe_id in sent:
                    receiver.wait(probe_id)
                assert taken is not None
                takeovers.append(taken)
                gaps.append(first)
                nodes.append(start())
        finally:
            stop.set()
            for node in nodes:
                node.stop()
    ms = [x * 1000 for x in latencies]
    print(
        f"reactive latency, {len(ms)} probes: p50 {pct(ms, 0.5):.0f} ms, "
        f"p95 {pct(ms, 0.95):.0f} ms, max {max(ms):.0f} ms"
    )
    each = ", ".join(f"{t:.2f} s" for t in takeovers)
    print(
        f"takeover after SIGKILL of the leader: {each} "
        f"(median {statistics.median(takeovers):.2f} s)"
    )
    each = ", ".join(f"{g:.2f} s" for g in gaps)
    print(
        f"kill -> first webhook of a probe sent after it: {each} "
        f"(median {statistics.median(gaps):.2f} s)"
    )
    print(f"webhook calls {receiver.calls}, distinct events {len(receiver.arrived)}")


if __name__ == "__main__":
    main()
