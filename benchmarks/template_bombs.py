"""Template bombs against a running server (issue 9, item 6): how long each takes to fail, how
much the server's RSS grows, and how long ingest stalls meanwhile.

    .venv/bin/python benchmarks/template_bombs.py

Setup: `herald serve` as a subprocess (a temporary DuckDB file). For each template, one
automation whose webhook body is that template; one event triggers it. Meanwhile a probe emits
one event every 10 ms through its own gRPC connection; the stall is the worst `Emit` latency
while the action runs, next to the worst latency over an idle second before it. RSS is sampled
every 10 ms. Templates: `'x'|center(200000000)`, `(['x'*100000]*2000)|join`, and a slow one
(10k `replace()` calls on 100k characters, several seconds of work) that meets the render time
limit (`automations.template_timeout_seconds`, 2 s).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.events import format_time

BOMBS = {
    "center(200M)": "{{ 'x'|center(200000000) }}",
    "join 2000 x 100k": "{{ (['x'*100000]*2000)|join }}",
    "slow (time limit)": (
        "{% for i in range(100) %}{% for j in range(100) %}"
        "{{ ('x' * 100000)|replace('x', 'yy')|length }}{% endfor %}{% endfor %}"
    ),
}


def event(name: str) -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(datetime.now(UTC)),
        "resource": {"prefect.resource.id": "bench.bomb"},
        "id": str(uuid.uuid4()),
    }


class Probe:
    """Emits one event every 10 ms; records (start time, latency)."""

    def __init__(self, address: str) -> None:
        self.samples: list[tuple[float, float]] = []
        self._client = HeraldClient(address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            self._client.emit([event("bench.probe")])
            self.samples.append((start, time.monotonic() - start))
            time.sleep(0.01)

    def worst(self, since: float, until: float) -> float:
        return max((lat for t, lat in self.samples if since <= t <= until), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


def main() -> None:
    print_header()
    server = ServerProcess()
    try:
        with AutomationsClient(server.grpc) as automations, HeraldClient(server.grpc) as events:
            ids = {}
            for i, (name, body) in enumerate(BOMBS.items()):
                ids[name] = automations.create(
                    {
                        "name": name,
                        "trigger": {"expect": [f"bench.bomb.{i}"]},
                        "actions": [
                            {
                                "type": "call-webhook",
                                "url": "http://127.0.0.1:9/never",
                                "body": body,
                                "retries": 0,
                            }
                        ],
                    }
                )["id"]
            probe = Probe(server.grpc)
            time.sleep(1.0)
            idle = probe.worst(time.monotonic() - 1.0, time.monotonic())
            print(f"idle: worst emit latency {idle * 1000:.1f} ms, RSS {server.rss_mb():.0f} MB")
            for i, name in enumerate(BOMBS):
                before = server.rss_mb()
                peak = before
                start = time.monotonic()
                events.emit([event(f"bench.bomb.{i}")])
                run = None
                while run is None and time.monotonic() - start < 60:
                    peak = max(peak, server.rss_mb())
                    for firing in automations.history(ids[name]):
                        for r in firing["action_runs"]:
                            if r["status"] != "triggered":
                                run = r
                    time.sleep(0.01)
                took = time.monotonic() - start
                stall = probe.worst(start, time.monotonic())
                reason = (run or {}).get("reason") or ""
                print(
                    f"{name}: {(run or {}).get('status')} after {took:.2f} s; "
                    f"RSS +{peak - before:.0f} MB; worst emit latency {stall * 1000:.1f} ms; "
                    f"{reason[:110]}"
                )
            probe.stop()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
