"""Prefect's event websockets (``/api/events/in``, ``/api/events/out``) and ``/api/health``
over real websockets against a real server: the handshake and its refusals, "the pong after
a ping means committed", per-event error frames that keep the connection going, the filter
message, the 15-minute backfill and the live tail without duplicates."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import httpx
import orjson
import pytest

from collector.app import Herald
from collector.domain.events import format_time
from collector.testing import running_herald, test_config

INGEST = "ws-ingest-token"
READ = "ws-read-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Herald]:
    tokens = [
        {"token": INGEST, "scopes": ["ingest"]},
        {"token": READ, "scopes": ["read"]},
    ]
    with running_herald(test_config(tmp_path / "ws.duckdb", auth={"tokens": tokens})) as h:
        yield h


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Herald]:
    with running_herald(test_config(tmp_path / "ws-open.duckdb")) as h:
        yield h


def event(name: str, rid: str = "ws.r", **extra: Any) -> dict[str, Any]:
    return {"event": name, "resource": {"prefect.resource.id": rid}, "id": str(uuid4()), **extra}


def stored(h: Herald, prefix: str) -> list[dict[str, Any]]:
    r = httpx.post(
        f"http://{h.http_address}/api/events/filter",
        json={"filter": {"event": {"prefix": [prefix]}, "order": "ASC"}, "limit": 1000},
        headers={"Authorization": f"Bearer {READ}"},
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def connect(
    session: aiohttp.ClientSession, h: Herald, path: str, token: str | None, **kw: dict[str, str]
) -> aiohttp.ClientWebSocketResponse:
    """Prefect's client's way in: subprotocol ``prefect``, ping, then the auth message."""
    url = f"ws://{h.http_address}/api/events/{path}"
    headers: dict[str, str] = kw.get("headers", {})
    ws = await session.ws_connect(url, protocols=("prefect",), autoping=False, headers=headers)
    await ws.send_str(orjson.dumps({"type": "auth", "token": token}).decode())
    return ws


async def next_text(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data: dict[str, Any] = orjson.loads(msg.data)
            return data
        assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG), msg


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    msg = await ws.receive(timeout=30)
    while msg.type == aiohttp.WSMsgType.TEXT:
        msg = await ws.receive(timeout=30)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return ws.close_code, str(msg.extra or "")


def test_health(open_server: Herald) -> None:
    r = httpx.get(f"http://{open_server.http_address}/api/health")
    assert r.status_code == 200 and r.json() is True


def test_handshake_refusals_close_with_the_reason(server: Herald) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "in", None)
            assert await closed_with(ws) == (1008, "Auth required but no token provided")
            ws = await connect(s, server, "in", "herald:wrong")
            assert await closed_with(ws) == (1008, "unknown bearer token")
            ws = await connect(s, server, "out", f"herald:{INGEST}")  # ingest cannot read
            code, reason = await closed_with(ws)
            assert code == 1008 and "'read' scope" in reason
            ws = await s.ws_connect(
                f"ws://{server.http_address}/api/events/in", protocols=("prefect",)
            )
            await ws.send_str('{"type": "hello"}')
            assert await closed_with(ws) == (1008, "Expected 'auth' message")
            # Without Prefect's subprotocol (and no header) a server with tokens refuses.
            ws = await s.ws_connect(f"ws://{server.http_address}/api/events/in")
            code, _ = await closed_with(ws)
            assert code == 1002
            # The auth string as Prefect sends it, bare or user:token, and a Basic header.
            for token in (f"herald:{INGEST}", INGEST):
                ws = await connect(s, server, "in", token)
                assert await next_text(ws) == {"type": "auth_success"}
                await ws.close()
            basic = base64.b64encode(f"herald:{INGEST}".encode()).decode()
            ws = await connect(s, server, "in", None, headers={"Authorization": f"Basic {basic}"})
            assert await next_text(ws) == {"type": "auth_success"}
            await ws.close()

    asyncio.run(run())


def test_the_pong_after_a_ping_means_committed(server: Herald) -> None:
    sent = [event("ws.ack", rid=f"r.{i}") for i in range(200)]

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "in", f"herald:{INGEST}")
            assert await next_text(ws) == {"type": "auth_success"}
            for e in sent:
                await ws.send_str(orjson.dumps(e).decode())
            await ws.ping(b"checkpoint")
            msg = await ws.receive(timeout=30)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"checkpoint")
            # No waiting: what the pong confirmed is readable now.
            assert {e["id"] for e in stored(server, "ws.ack")} == {e["id"] for e in sent}
            await ws.close()

    asyncio.run(run())


def test_refused_events_are_named_and_the_connection_goes_on(server: Herald) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "in", f"herald:{INGEST}")
            assert await next_text(ws) == {"type": "auth_success"}
            bad = {"event": "ws.bad", "id": str(uuid4())}  # no resource
            await ws.send_str(orjson.dumps(bad).decode())
            await ws.send_str("not json")
            good = event("ws.good")
            await ws.send_str(orjson.dumps(good).decode())
            for _ in range(20):  # more refusals than error frames are sent
                await ws.send_str("[]")
            await ws.ping(b"p")
            frames = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type == aiohttp.WSMsgType.PONG:
                    break
                frames.append(orjson.loads(msg.data))
            assert frames[0]["type"] == "error" and frames[0]["index"] == 0
            assert frames[0]["id"] == bad["id"] and "resource" in frames[0]["message"]
            assert frames[1]["index"] == 1 and "not valid JSON" in frames[1]["message"]
            assert len(frames) == 8  # MAX_ERROR_FRAMES; the rest go to the server log
            assert [e["id"] for e in stored(server, "ws.good")] == [good["id"]]
            assert stored(server, "ws.bad") == []
            await ws.close()

    asyncio.run(run())


def test_out_backfills_15_minutes_then_streams_live_once(server: Herald) -> None:
    now = datetime.now(UTC)
    old = event("ws.out.old", occurred=format_time(now - timedelta(hours=1)))
    recent = event("ws.out.recent", occurred=format_time(now - timedelta(minutes=5)))
    other = event("other.recent")
    r = httpx.post(
        f"http://{server.http_address}/api/events",
        json=[old, recent, other],
        headers={"Authorization": f"Bearer {INGEST}"},
    )
    assert r.status_code == 204, r.text

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "out", f"herald:{READ}")
            assert await next_text(ws) == {"type": "auth_success"}
            # What Prefect's subscriber sends: since one day back, until a year ahead.
            since, until = now - timedelta(days=1), now + timedelta(days=365)
            flt = {
                "occurred": {"since": format_time(since), "until": format_time(until)},
                "event": {"prefix": ["ws.out."]},
                "id": {"id": []},
                "order": "DESC",
            }
            await ws.send_str(orjson.dumps({"type": "filter", "filter": flt}).decode())
            first = await next_text(ws)
            assert first["type"] == "event" and first["event"]["id"] == recent["id"]
            live = event("ws.out.live")
            async with aiohttp.ClientSession() as ingest:
                await ingest.post(
                    f"http://{server.http_address}/api/events",
                    json=[other, live, recent],  # recent again: a re-send, never twice
                    headers={"Authorization": f"Bearer {INGEST}"},
                )
            second = await next_text(ws)
            assert second["event"]["id"] == live["id"]
            assert second["event"]["received"]
            await ws.close()

            ws = await connect(s, server, "out", f"herald:{READ}")
            assert await next_text(ws) == {"type": "auth_success"}
            await ws.send_str(
                orjson.dumps({"type": "filter", "filter": flt, "backfill": False}).decode()
            )
            posted: list[str] = []
            async with aiohttp.ClientSession() as ingest:
                # The subscription exists once the server has read the filter; post fresh
                # events until the stream shows one (one posted before it is not streamed).
                for _ in range(100):
                    later = event("ws.out.later")
                    posted.append(later["id"])
                    await ingest.post(
                        f"http://{server.http_address}/api/events",
                        json=[later],
                        headers={"Authorization": f"Bearer {INGEST}"},
                    )
                    try:
                        got = await asyncio.wait_for(next_text(ws), timeout=0.2)
                        break
                    except TimeoutError:
                        continue
            assert got["event"]["id"] in posted  # no backfill: not recent, not live
            await ws.close()

    asyncio.run(run())


def test_out_refuses_a_bad_filter_message(server: Herald) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            for message, reason in (
                ({"type": "subscribe"}, "Expected 'filter' message"),
                ({"type": "filter", "filter": {"colour": "red"}}, "Invalid filter: "),
                ({"type": "filter", "filter": {"event": {"prefix": "x"}}}, "Invalid filter: "),
            ):
                ws = await connect(s, server, "out", READ)
                assert await next_text(ws) == {"type": "auth_success"}
                await ws.send_str(orjson.dumps(message).decode())
                code, why = await closed_with(ws)
                assert code == 1002 and why.startswith(reason), (message, why)

    asyncio.run(run())


def test_a_closed_connection_has_committed_what_it_sent(server: Herald) -> None:
    """Prefect's client ends with a close handshake, no last ping: the server's close frame
    (what the client waits for) comes only once everything before it is committed."""
    sent = [event("ws.close", rid=f"r.{i}") for i in range(300)]

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "in", f"herald:{INGEST}")
            assert await next_text(ws) == {"type": "auth_success"}
            for e in sent:
                await ws.send_str(orjson.dumps(e).decode())
            await ws.close()
            assert ws.close_code == 1000
            assert {e["id"] for e in stored(server, "ws.close")} == {e["id"] for e in sent}

    asyncio.run(run())


def test_a_full_queue_closes_with_1013_before_the_pong(tmp_path: Path) -> None:
    """Busy: the ping that would confirm refused events is not answered; the socket closes
    with 1013 (try again later), so Prefect's client reconnects and re-sends them. Several
    connections at once against a queue of one event: some of their groups find it full."""
    config = test_config(
        tmp_path / "busy.duckdb", storage={"queue_max_events": 1, "batch_max_events": 1}
    )
    with running_herald(config) as busy:

        async def one(s: aiohttp.ClientSession, c: int) -> tuple[int | None, str]:
            ws = await connect(s, busy, "in", None)
            assert await next_text(ws) == {"type": "auth_success"}
            for i in range(300):
                await ws.send_str(orjson.dumps(event("ws.busy", rid=f"r.{c}.{i}")).decode())
            await ws.ping(b"p")
            msg = await ws.receive(timeout=30)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=30)
            if msg.type == aiohttp.WSMsgType.PONG:
                await ws.close()
                return None, "pong"
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            return ws.close_code, str(msg.extra)

        async def run() -> list[tuple[int | None, str]]:
            async with aiohttp.ClientSession() as s:
                return await asyncio.gather(*(one(s, c) for c in range(6)))

        answers = asyncio.run(run())
        closed = [a for a in answers if a[1] != "pong"]
        assert closed, answers
        assert all(code == 1013 and "busy" in why for code, why in closed), answers


def test_without_the_subprotocol_an_open_server_takes_events(open_server: Herald) -> None:
    """Prefect's legacy mode: no subprotocol, no handshake — only when no tokens are set."""

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            url = f"ws://{open_server.http_address}/api/events/in"
            ws = await s.ws_connect(url, autoping=False)
            sent = event("ws.legacy")
            await ws.send_str(orjson.dumps(sent).decode())
            await ws.ping(b"x")
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.PONG
            await ws.close()
        r = httpx.post(
            f"http://{open_server.http_address}/api/events/filter",
            json={"filter": {"event": {"name": ["ws.legacy"]}}},
        )
        assert [e["id"] for e in r.json()["events"]] == [sent["id"]]

    asyncio.run(run())


def test_a_frame_over_the_receive_limit_closes_with_1009(tmp_path: Path) -> None:
    config = test_config(tmp_path / "limit.duckdb", server={"max_receive_bytes": 65536})
    with running_herald(config) as limited:

        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                ws = await connect(s, limited, "in", None)
                assert await next_text(ws) == {"type": "auth_success"}
                big = event("ws.big", payload={"blob": "x" * 100_000})
                await ws.send_str(orjson.dumps(big).decode())
                code, _ = await closed_with(ws)
                assert code == 1009

        asyncio.run(run())
