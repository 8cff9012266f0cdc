"""Prefect's event websockets and health check, for the ``prefect`` package's own client
(``emit_event``, ``prefect events stream``), P§3.3, §3.4, §4.8:

* ``GET /api/health`` → ``true``.
* ``WS /api/events/in``: one event JSON per text frame. Prefect's client confirms what it sent
  with a ping: its pong means "everything before the ping is stored". Herald answers that ping
  only once every event received before it is committed — acknowledged = committed, as on
  every other path; the same for the answer to a client's close (aiohttp's automatic pong
  and close are off for this reason). An event Herald refuses
  is answered with ``{"type": "error", "index": n, "id": …, "message": …}`` (``index`` counts
  the connection's frames from 0) and the connection goes on; at most ``MAX_ERROR_FRAMES`` such
  frames per connection (Prefect's client never reads them, and a client library stops
  reading the socket — pongs included — once a few unread frames pile up), the rest only in
  the server log. A full ingest queue closes the socket with 1013 (try again later): the
  client reconnects and re-sends what was not confirmed.
* ``WS /api/events/out``: after the handshake, ``{"type": "filter", "filter": {…},
  "backfill": true}``; then ``{"type": "event", "event": {…}}`` for the stored matches of the
  last ``BACKFILL_WINDOW`` (oldest first), then live ones from the tail
  (``collector/pipeline/tail.py``), never one twice. A subscriber that falls behind is sent
  ``{"type": "lagged", "missed": n}`` (Herald's addition) instead of losing events silently.

The handshake, as Prefect's server does it: with the ``prefect`` subprotocol the first frame
must be ``{"type": "auth", "token": …}`` and is answered ``{"type": "auth_success"}``; the
token is Prefect's auth string (``herald:<token>`` or the bare token, see ``auth.py``), or an
``Authorization`` header on the upgrade. Failures close with 1008 and the reason. Without the
subprotocol a socket is accepted (no handshake) only when no tokens are configured (1002
otherwise). ``ingest`` scope to send, ``read`` to subscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from collector.clock import Clock
from collector.config import Scope
from collector.domain.event_store import EventReads
from collector.domain.filters import EventFilter, EventOrder, parse_filter
from collector.errors import Busy, HeraldError, InvalidInput, PermissionDenied, Unauthenticated
from collector.pipeline.ingest import NativeIngest
from collector.pipeline.tail import TailHub
from collector.server.auth import Authenticator
from collector.server.http_server import MAX_BYTES_KEY, Route, request_authorization

log = logging.getLogger(__name__)

SUBPROTOCOL = "prefect"
HANDSHAKE_SECONDS = 10.0
MAX_ERROR_FRAMES = 8
BACKFILL_WINDOW = timedelta(minutes=15)  # Prefect's maximum_websocket_backfill
BACKFILL_MAX_EVENTS = 1000
TRY_AGAIN_LATER = 1013
# Frames of one connection waiting for the next group (also bounded by server.max_receive_bytes
# in bytes); beyond, the socket is not read until they are stored (TCP pushes back on the
# client), so memory stays bounded.
MAX_PENDING_FRAMES = 1000


class _Refused(Exception):
    """Close the socket with ``code`` and ``reason`` (the handshake failed)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _receive(ws: web.WebSocketResponse, timeout: float | None = None) -> Any:
    """The next data frame's text; pings are answered on the way (before the handshake)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        if msg.type == WSMsgType.PONG:
            continue
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return msg.data
        raise _Refused(WSCloseCode.OK, "closed")


def _json_object(text: Any, expected: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _Refused(WSCloseCode.POLICY_VIOLATION, f"Expected '{expected}' message") from None
    if not isinstance(data, dict) or data.get("type") != expected:
        raise _Refused(WSCloseCode.POLICY_VIOLATION, f"Expected '{expected}' message")
    return data


async def _accept(
    request: web.Request, auth: Authenticator, scope: Scope
) -> tuple[web.WebSocketResponse, bool]:
    """Upgrade and run Prefect's handshake: the socket, and False if it was refused (and
    closed with the reason)."""
    # Neither ping nor close is answered by aiohttp itself: a pong or a close frame tells
    # Prefect's client that what it sent before is stored, so Herald sends them after the
    # commits (events/in).
    # A frame over the receive limit closes the socket (1009), as a body over it is a 413.
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        autoping=False,
        autoclose=False,
        max_msg_size=request.app[MAX_BYTES_KEY],
    )
    await ws.prepare(request)
    try:
        header = request_authorization(request)
        if ws.ws_protocol != SUBPROTOCOL:
            if auth.enabled and header is None:
                raise _Refused(WSCloseCode.PROTOCOL_ERROR, "the 'prefect' subprotocol is required")
        else:
            try:
                text = await _receive(ws, HANDSHAKE_SECONDS)
            except TimeoutError:
                raise _Refused(WSCloseCode.POLICY_VIOLATION, "Expected 'auth' message") from None
            token = _json_object(text, "auth").get("token")
            if auth.enabled and header is None:
                if not token:
                    raise _Refused(
                        WSCloseCode.POLICY_VIOLATION, "Auth required but no token provided"
                    )
                scopes = auth.auth_string_scopes(str(token))
                if scope not in scopes and Scope.ADMIN not in scopes:
                    raise PermissionDenied(f"this token lacks the '{scope.value}' scope")
        if header is not None:
            auth.check(header, scope)
        if ws.ws_protocol == SUBPROTOCOL:
            await ws.send_str('{"type":"auth_success"}')
    except (Unauthenticated, PermissionDenied) as exc:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc).encode()[:120])
        return ws, False
    except _Refused as refused:
        await ws.close(code=refused.code, message=refused.reason.encode()[:120])
        return ws, False
    return ws, True


def prefect_routes(
    auth: Authenticator, ingest: NativeIngest, reader: EventReads, tail: TailHub, clock: Clock
) -> list[Route]:
    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response(True)

    async def events_in(request: web.Request) -> web.StreamResponse:
        ws, accepted = await _accept(request, auth, Scope.INGEST)
        if not accepted:
            return ws
        stored = _Committer(ws, ingest)
        try:
            await _take_events(ws, stored, request.app[MAX_BYTES_KEY])
        finally:
            stored.cancel()
        return ws

    async def events_out(request: web.Request) -> web.StreamResponse:
        ws, accepted = await _accept(request, auth, Scope.READ)
        if not accepted:
            return ws
        try:
            await _stream_events(ws, reader, tail, clock)
        except _Refused as refused:
            await ws.close(code=refused.code, message=refused.reason.encode()[:120])
        await ws.close()  # answers the client's close (a no-op once closed)
        return ws

    return [
        Route("GET", "/api/health", health, None),
        # Scope None: the handshake authenticates (the token travels inside the socket).
        Route("GET", "/api/events/in", events_in, None),
        Route("GET", "/api/events/out", events_out, None),
    ]


class _Committer:
    """The frames of one ``/events/in`` connection on their way to the store: they gather in a
    buffer while the previous group is being committed, and each group goes to the ingest
    step in one call (one pass of mapping, one submit: one frame per call cost ten times as
    much). Refusals are reported in frame order, within the error budget."""

    def __init__(self, ws: web.WebSocketResponse, ingest: NativeIngest) -> None:
        self._ws = ws
        self._ingest = ingest
        self._buffer: list[tuple[int, Any]] = []  # (frame index, frame text)
        self._flushing: asyncio.Task[None] | None = None
        self._index = 0
        self._errors_sent = 0
        self._busy: Busy | None = None
        self._buffered_bytes = 0

    def submit(self, text: Any) -> None:
        self._buffer.append((self._index, text))
        self._buffered_bytes += len(text)
        self._index += 1
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    def full(self, max_bytes: int) -> bool:
        """Whether the frames waiting for the next group reach a bound (count or bytes)."""
        return len(self._buffer) >= MAX_PENDING_FRAMES or self._buffered_bytes >= max_bytes

    async def _flush(self) -> None:
        while self._buffer:
            group, self._buffer, self._buffered_bytes = self._buffer, [], 0
            await self._store(group)

    async def _store(self, group: list[tuple[int, Any]]) -> None:
        refused: list[tuple[int, Any, str]] = []  # (frame index, event id, reason)
        items: list[Any] = []
        where: list[tuple[int, Any]] = []  # per item: (frame index, event id)
        for index, text in group:
            try:
                item = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                refused.append((index, None, f"the frame is not valid JSON: {exc}"))
                continue
            items.append(item)
            where.append((index, item.get("id") if isinstance(item, dict) else None))
        if items:
            try:
                _, errors = await self._ingest.emit_items(items)
            except Busy as exc:
                self._busy = exc
                errors = []
            except HeraldError as exc:
                errors = [(i, str(exc)) for i in range(len(items))]
            refused += [(*where[i], reason) for i, reason in errors]
        for index, event_id, reason in sorted(refused, key=lambda r: r[0]):
            await self._error(index, event_id, reason)

    async def _error(self, index: int, event_id: Any, message: str) -> None:
        if self._errors_sent >= MAX_ERROR_FRAMES:
            log.warning("events/in: event %d refused: %s", index, message)
            return
        self._errors_sent += 1
        frame = {"type": "error", "index": index, "id": event_id, "message": message}
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.send_str(orjson.dumps(frame).decode())

    async def settle(self) -> Busy | None:
        """Wait until every frame received so far is stored (or refused); the ``Busy`` that
        refused some, if any."""
        if self._flushing is not None:
            await self._flushing
        return self._busy

    def cancel(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()


async def _take_events(ws: web.WebSocketResponse, stored: _Committer, max_bytes: int) -> None:
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            stored.submit(msg.data)
            if stored.full(max_bytes) and not await _settled(ws, stored):
                return
        elif msg.type == WSMsgType.PING:
            # The client's checkpoint: pong only once what came before it is committed.
            if not await _settled(ws, stored):
                return
            await ws.pong(msg.data)
        elif msg.type == WSMsgType.PONG:
            continue
        else:  # close, closing, error: what was received is committed, then the close answered
            await stored.settle()
            await ws.close()
            return


async def _settled(ws: web.WebSocketResponse, stored: _Committer) -> bool:
    """Wait for the pending commits; False (and the socket closed with 1013, unconfirmed
    events to be re-sent) if the ingest queue refused any of them."""
    busy = await stored.settle()
    if busy is None:
        return True
    reason = f"busy, retry in {busy.retry_after:g}s: {busy}"
    await ws.close(code=TRY_AGAIN_LATER, message=reason.encode()[:120])
    return False


def _stream_filter(data: dict[str, Any], clock: Clock) -> EventFilter:
    try:
        filter = parse_filter(data.get("filter"))
    except InvalidInput as exc:
        raise _Refused(WSCloseCode.PROTOCOL_ERROR, f"Invalid filter: {exc}") from None
    # Prefect clamps the backfill to the last 15 minutes and streams oldest first.
    earliest = clock.now() - BACKFILL_WINDOW
    since = filter.occurred.since
    occurred = filter.occurred.model_copy(
        update={"since": earliest if since is None or since < earliest else since}
    )
    return filter.model_copy(update={"occurred": occurred, "order": EventOrder.ASC})


async def _stream_events(
    ws: web.WebSocketResponse, reader: EventReads, tail: TailHub, clock: Clock
) -> None:
    try:
        text = await _receive(ws, HANDSHAKE_SECONDS)
    except TimeoutError:
        raise _Refused(WSCloseCode.PROTOCOL_ERROR, "Expected 'filter' message") from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "filter":
        raise _Refused(WSCloseCode.PROTOCOL_ERROR, "Expected 'filter' message")
    filter = _stream_filter(data, clock)
    try:
        # Subscribed before the backfill query: nothing committed in between is missed, and
        # the subscription's seen-ids keep the two from overlapping.
        sub = tail.subscribe(filter)
    except Busy as exc:
        raise _Refused(TRY_AGAIN_LATER, str(exc)) from None
    # The client sends nothing more; reading still answers its pings and sees it leave.
    watcher = asyncio.ensure_future(_watch(ws))
    try:
        if data.get("backfill", True) is not False:
            recent = await asyncio.to_thread(reader.recent, filter, BACKFILL_MAX_EVENTS)
            for event in recent:
                sub.mark_seen(str(event.id))
                await ws.send_str(
                    orjson.dumps({"type": "event", "event": event.to_dict()}).decode()
                )
        while not ws.closed:
            nxt = asyncio.ensure_future(sub.next_json())
            done, _ = await asyncio.wait({nxt, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                return
            kind, item = nxt.result()
            if kind == "lagged":
                await ws.send_str(orjson.dumps({"type": "lagged", "missed": item}).decode())
            else:  # wire JSON built once on the tail thread, shared by subscribers
                await ws.send_str('{"type":"event","event":' + item.decode() + "}")
    except (ConnectionError, RuntimeError):
        return  # the client went away mid-send
    finally:
        watcher.cancel()
        tail.unsubscribe(sub)


async def _watch(ws: web.WebSocketResponse) -> None:
    """Read (and answer pings) until the client closes the socket."""
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
