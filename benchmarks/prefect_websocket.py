"""Prefect's websocket ingest (`/api/events/in`): confirmed events per second, against
`POST /api/events` with the same events in batches of the same size, one server.

    .venv/bin/python benchmarks/prefect_websocket.py --connections 4 --events 20000

Each of `--connections` websockets does what Prefect's client does: one event per text frame,
a ping every `--checkpoint` events (Prefect's `checkpoint_every`, 700) and waits for the pong,
which Herald sends once everything before the ping is committed. The HTTP phase posts the same
number of events as JSON arrays of `--checkpoint` events from as many concurrent clients.
Events are small realistic ones (3 labels, 1 related resource, a small payload).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess


def make_event(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": "bench.flow-run.Completed",
        "resource": {
            "prefect.resource.id": f"bench.flow-run.{i % 1000}",
            "prefect.resource.name": f"run-{i % 1000}",
            "env": "prod",
        },
        "related": [{"prefect.resource.id": "bench.flow.etl", "prefect.resource.role": "flow"}],
        "payload": {"i": i, "state": "Completed"},
    }


async def websocket_sender(http: str, events: list[bytes], checkpoint: int) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"ws://{http}/api/events/in", protocols=("prefect",), autoping=False
        )
        await ws.send_str('{"type": "auth", "token": null}')
        msg = await ws.receive()
        assert orjson.loads(msg.data)["type"] == "auth_success", msg
        for start in range(0, len(events), checkpoint):
            for frame in events[start : start + checkpoint]:
                await ws.send_bytes(frame)
            await ws.ping(b"c")
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.PONG, msg
        await ws.close()


async def http_sender(http: str, events: list[bytes], checkpoint: int) -> None:
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), checkpoint):
            body = b"[" + b",".join(events[start : start + checkpoint]) + b"]"
            async with session.post(f"http://{http}/api/events", data=body) as r:
                assert r.status == 204, await r.text()


async def phase(
    sender: Any, http: str, per_connection: list[list[bytes]], checkpoint: int
) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(sender(http, events, checkpoint) for events in per_connection))
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--events", type=int, default=20_000, help="per phase, all connections")
    ap.add_argument("--checkpoint", type=int, default=700)
    args = ap.parse_args()
    print_header()
    per = args.events // args.connections
    server = ServerProcess()
    try:
        for name, sender in (("websocket", websocket_sender), ("http", http_sender)):
            batches = [
                [orjson.dumps(make_event(c * per + i)) for i in range(per)]
                for c in range(args.connections)
            ]
            took = asyncio.run(phase(sender, server.http, batches, args.checkpoint))
            total = per * args.connections
            print(
                f"{name:9s} {total} events, {args.connections} connections, "
                f"checkpoint {args.checkpoint}: {took:.2f} s, {total / took:,.0f} events/s"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
