"""Stopping a runaway automation (issue 9, item 3): how long `pause` and `delete` take to
answer under a backlog of thousands of waiting webhooks, and how many webhooks still arrive
after they answered.

    .venv/bin/python benchmarks/automation_stop.py --events 15000 --hot-rate 1000

Setup: `herald serve` as a subprocess (`automations.max_queued_actions` raised to hold the
whole backlog); a webhook receiver in this process (aiohttp, 127.0.0.1, port 0) that takes
`--delay` s per request, so webhooks pile up. An automation (`rate_limit: "off"`) calls the
receiver for every `bench.hot` event. `--events` hot events are sent at once, then a hot
stream of `--hot-rate` events/s keeps going while the automation is paused (or deleted). After
`--warmup` s of backlog: the pause is timed, then webhooks are counted for `--observe` s.
Then the same for a second automation and `delete`.

`--legacy` drives a server from before the fix (no `rate_limit` field, no
`max_queued_actions` key) for a before/after comparison; its backlog is not bounded anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector._proto import herald_pb2, herald_pb2_grpc
from collector.client.automations import AutomationsClient
from collector.domain.events import format_time


class Receiver:
    """A slow webhook receiver: records (path, arrival time) as each request arrives."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> str:
        async def handle(request: web.Request) -> web.Response:
            with self.lock:
                self.arrivals.append((request.path, time.monotonic()))
            await request.read()
            await asyncio.sleep(self.delay)
            return web.Response(status=204)

        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def count(self, path: str, after: float = 0.0) -> int:
        with self.lock:
            return sum(1 for p, t in self.arrivals if p == path and t > after)


def hot_batch(n: int, counter: list[int]) -> bytes:
    now = format_time(datetime.now(UTC))
    events = []
    for _ in range(n):
        counter[0] += 1
        events.append(
            {
                "event": "bench.hot",
                "occurred": now,
                "resource": {"prefect.resource.id": f"app.cache.{counter[0] % 50}"},
                "id": str(uuid.uuid4()),
            }
        )
    return orjson.dumps(events)


class HotStream:
    """`rate` hot events/s in batches of 100 from a thread, until stopped."""

    def __init__(self, stub: Any, rate: float) -> None:
        self._stub, self._rate = stub, rate
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        counter = [10_000_000]
        next_at = time.monotonic()
        while not self._stop.is_set() and self._rate > 0:
            try:
                reply = self._stub.Emit(
                    herald_pb2.EmitRequest(events_json=hot_batch(100, counter)), timeout=60
                )
                self.sent += reply.accepted
            except grpc.RpcError:
                pass
            next_at += 100 / self._rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(70)


def scenario(
    args: argparse.Namespace,
    server: ServerProcess,
    receiver: Receiver,
    name: str,
    stop: str,
) -> dict[str, Any]:
    path = f"/{name}"
    spec: dict[str, Any] = {
        "name": name,
        "trigger": {"expect": ["bench.hot"]},
        "actions": [{"type": "call-webhook", "url": receiver.url + path, "retries": 0}],
    }
    if not args.legacy:
        spec["rate_limit"] = "off"
    stub = herald_pb2_grpc.HeraldStub(grpc.insecure_channel(server.grpc))
    with AutomationsClient(server.grpc, timeout=300) as client:
        automation_id = client.create(spec)["id"]
        counter = [0]
        started = time.monotonic()
        for _ in range(0, args.events, 500):
            stub.Emit(herald_pb2.EmitRequest(events_json=hot_batch(500, counter)), timeout=300)
        emitted = time.monotonic() - started
        hot = HotStream(stub, args.hot_rate)
        time.sleep(args.warmup)
        sent_before = receiver.count(path)
        t0 = time.monotonic()
        if stop == "pause":
            client.set_enabled(automation_id, False)
        else:
            client.delete(automation_id)
        answered = time.monotonic()
        time.sleep(args.observe)
        after = receiver.count(path, answered)
        in_first_second = receiver.count(path, answered) - receiver.count(path, answered + 1.0)
        hot.stop()
    return {
        "stop": stop,
        "emit_s": emitted,
        "sent_before": sent_before,
        "answer_s": answered - t0,
        "after": after,
        "after_first_s": in_first_second,
        "automation_id": automation_id,
        "hot_sent": hot.sent,
    }


def statuses(server: ServerProcess, automation_id: str) -> dict[str, int]:
    import duckdb

    conn = duckdb.connect(str(server.db), read_only=True)
    try:
        rows = conn.execute(
            "SELECT status, count(*) FROM action_runs WHERE automation_id = ? GROUP BY 1",
            [automation_id],
        ).fetchall()
        return {str(s): int(n) for s, n in rows}
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=15_000, help="hot events sent at once")
    ap.add_argument("--hot-rate", type=float, default=1000, help="hot events/s meanwhile")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds per webhook request")
    ap.add_argument("--warmup", type=float, default=3.0, help="backlog seconds before the stop")
    ap.add_argument("--observe", type=float, default=5.0, help="seconds counted after it")
    ap.add_argument("--legacy", action="store_true", help="a server from before the fix")
    args = ap.parse_args()
    print_header()

    receiver = Receiver(args.delay)
    env = {} if args.legacy else {"HERALD_AUTOMATIONS__MAX_QUEUED_ACTIONS": str(args.events * 3)}
    server = ServerProcess(env=env)
    results = []
    try:
        for name, stop in (("paused", "pause"), ("deleted", "delete")):
            results.append(scenario(args, server, receiver, name, stop))
        rss = server.max_rss_mb
        server.stop()
        for result in results:
            result["statuses"] = statuses(server, result["automation_id"])
    finally:
        server.cleanup()

    print(
        f"{args.events:,} hot events at once, then {args.hot_rate:g}/s; webhook {args.delay} s "
        f"per request; stop after {args.warmup} s of backlog; counted for {args.observe} s"
        + (" (legacy server)" if args.legacy else "")
    )
    print(
        f"{'stop':>7} {'emit s':>7} {'sent before':>12} {'answer s':>9} "
        f"{'after (1st s)':>14}  action_runs after the stop"
    )
    for r in results:
        print(
            f"{r['stop']:>7} {r['emit_s']:7.1f} {r['sent_before']:12,} {r['answer_s']:9.2f} "
            f"{r['after']:>7,} ({r['after_first_s']:,})  {r['statuses']}"
        )
    print(f"server max RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
