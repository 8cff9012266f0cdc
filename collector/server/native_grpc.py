"""Herald's native gRPC service (``herald.v1.Herald``): ingest, the feed, counts, one event,
one trace, the live tail and SQL. Each method is auth → decode → call the domain object →
encode; no storage or query logic lives here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

import grpc
import orjson
import pyarrow as pa

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.config import Scope
from collector.domain.event_store import EventReads, SqlRowStream
from collector.domain.filters import parse_filter
from collector.domain.otel_ids import parse_trace_id
from collector.domain.self_metrics import NoMetrics, SelfMetrics, sql_outcome_of
from collector.domain.traces import read_trace
from collector.errors import HeraldError, PayloadTooLarge
from collector.pipeline.ingest import NativeIngest
from collector.pipeline.tail import TailHub
from collector.server.auth import Authenticator, authorization_metadata
from collector.server.sql_lane import SqlLane, SqlTicket, within
from collector.server.status import abort_grpc
from collector.store.sql import ANSWER_GRACE_SECONDS, time_limit_error

TAIL_BACKFILL_DEFAULT = 100


def authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The ``authorization`` metadata value of the call, if any."""
    return authorization_metadata(context.invocation_metadata())


def arrow_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())  # pyarrow has no hints: bytes() names the type it gives


# Largest result the unary ``Sql`` sends: the clients' 64 MiB message limit, less room for the
# rest of the message.
UNARY_SQL_BYTES = 64 * 1024 * 1024 - 64 * 1024

# Largest ``SqlChunk.arrow_ipc``: far below the 64 MiB message limit, and small enough that a
# slow reader holds back the server after a few MiB (gRPC flow control on each write).
SQL_CHUNK_BYTES = 2 * 1024 * 1024


class _IpcPieces:
    """The file an Arrow IPC stream writer writes to: it keeps what was written until
    ``take()`` hands it out in pieces of at most ``SQL_CHUNK_BYTES``."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data: bytes | memoryview) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> list[bytes]:
        data = b"".join(self._parts)
        self._parts.clear()
        return [data[i : i + SQL_CHUNK_BYTES] for i in range(0, len(data), SQL_CHUNK_BYTES)]


class HeraldServicer(herald_pb2_grpc.HeraldServicer):
    def __init__(
        self,
        ingest: NativeIngest,
        reader: EventReads,
        tail: TailHub,
        auth: Authenticator,
        *,
        metrics: SelfMetrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._ingest = ingest
        self._reader = reader
        self._tail = tail
        self._auth = auth
        # User SQL runs on its own bounded threads, never asyncio's default pool (sql_lane.py).
        self._sql_lane = SqlLane(reader.sql_concurrency)

    async def Emit(
        self,
        request: herald_pb2.EmitRequest,
        context: grpc.aio.ServicerContext[herald_pb2.EmitRequest, herald_pb2.EmitResponse],
    ) -> herald_pb2.EmitResponse:
        try:
            self._auth.check(authorization(context), Scope.INGEST)
            accepted, errors = await self._ingest.emit_json(request.events_json)
        except Exception as exc:  # an unexpected one is INTERNAL and logged, never UNKNOWN
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises
        return herald_pb2.EmitResponse(
            accepted=accepted,
            errors=[herald_pb2.EmitError(index=i, message=m) for i, m in errors],
        )

    async def QueryEvents(
        self,
        request: herald_pb2.QueryRequest,
        context: grpc.aio.ServicerContext[herald_pb2.QueryRequest, herald_pb2.QueryResponse],
    ) -> herald_pb2.QueryResponse:
        try:
            self._auth.check(authorization(context), Scope.READ)
            filter = None if request.page_token else parse_filter(request.filter_json or None)
            page = await asyncio.to_thread(
                self._reader.query, filter, request.limit or None, request.page_token or None
            )
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        return herald_pb2.QueryResponse(
            events_json=orjson.dumps([e.to_dict() for e in page.events]),
            total=page.total,
            next_page=page.next_page or "",
            total_is_lower_bound=page.total_is_lower_bound,
        )

    async def CountEvents(
        self,
        request: herald_pb2.CountRequest,
        context: grpc.aio.ServicerContext[herald_pb2.CountRequest, herald_pb2.CountResponse],
    ) -> herald_pb2.CountResponse:
        try:
            self._auth.check(authorization(context), Scope.READ)
            filter = parse_filter(request.filter_json or None)
            result = await asyncio.to_thread(
                self._reader.count_groups,
                filter,
                request.countable,
                request.time_unit or "day",
                request.time_interval or 1.0,
                request.limit or None,
            )
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        return herald_pb2.CountResponse(
            counts_json=orjson.dumps([c.to_dict() for c in result.counts]), groups=result.groups
        )

    async def GetEvent(
        self,
        request: herald_pb2.GetEventRequest,
        context: grpc.aio.ServicerContext[herald_pb2.GetEventRequest, herald_pb2.EventResponse],
    ) -> herald_pb2.EventResponse:
        try:
            self._auth.check(authorization(context), Scope.READ)
            event = await asyncio.to_thread(self._reader.get, request.id)
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        return herald_pb2.EventResponse(event_json=orjson.dumps(event.to_dict()))

    async def GetTrace(
        self,
        request: herald_pb2.GetTraceRequest,
        context: grpc.aio.ServicerContext[herald_pb2.GetTraceRequest, herald_pb2.TraceResponse],
    ) -> herald_pb2.TraceResponse:
        try:
            self._auth.check(authorization(context), Scope.READ)
            trace_id = parse_trace_id(request.trace_id)
            trace = await asyncio.to_thread(read_trace, self._reader, trace_id)
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        return herald_pb2.TraceResponse(trace_json=orjson.dumps(trace))

    async def Tail(
        self,
        request: herald_pb2.TailRequest,
        context: grpc.aio.ServicerContext[herald_pb2.TailRequest, herald_pb2.TailMessage],
    ) -> AsyncIterator[herald_pb2.TailMessage]:
        try:
            self._auth.check(authorization(context), Scope.READ)
            filter = parse_filter(request.filter_json or None)
            # Subscribe before the backfill query, so nothing committed in between is missed;
            # the subscription's seen-ids keep the two from overlapping. Busy past the cap.
            sub = self._tail.subscribe(filter)
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        try:
            # Response headers now: a client that waits for them knows it is subscribed.
            await context.send_initial_metadata(())
            if request.backfill:
                limit = request.backfill_limit or TAIL_BACKFILL_DEFAULT
                for event in await asyncio.to_thread(self._reader.recent, filter, limit):
                    sub.mark_seen(str(event.id))
                    yield herald_pb2.TailMessage(event_json=orjson.dumps(event.to_dict()))
            while True:
                kind, item = await sub.next_json()
                if kind == "lagged":
                    yield herald_pb2.TailMessage(lagged=item)
                else:  # wire JSON built once on the tail thread, shared by subscribers
                    yield herald_pb2.TailMessage(event_json=item)
        finally:
            self._tail.unsubscribe(sub)

    async def Sql(
        self,
        request: herald_pb2.SqlRequest,
        context: grpc.aio.ServicerContext[herald_pb2.SqlRequest, herald_pb2.SqlResponse],
    ) -> herald_pb2.SqlResponse:
        try:
            self._auth.check(authorization(context), Scope.READ)
            ticket = self._sql_lane.admit()
            try:
                limit = self._reader.sql_time_limit(all_rows=False)
                running = ticket.run(self._reader.sql, request.sql)
                try:
                    # The answer comes at the time limit even when DuckDB cannot stop the
                    # statement yet (one huge value); its slot stays taken until it has.
                    result = await within(running, _answer_by(limit))
                except TimeoutError:
                    raise time_limit_error(limit) from None
            finally:
                ticket.release()
            data = arrow_ipc(result.table)
            if len(data) > UNARY_SQL_BYTES:
                # Refused here, with a reason, instead of by gRPC after the fact (a bare
                # RESOURCE_EXHAUSTED and a traceback in the log).
                raise PayloadTooLarge(
                    f"the result is {len(data) / 2**20:.0f} MiB, more than one message holds; "
                    "use SqlStream (herald sql streams)"
                )
        except HeraldError as exc:
            self._sql_ended("unary", exc)
            await abort_grpc(context, exc)
            raise
        self._metrics.sql_query("unary", "ok")
        return herald_pb2.SqlResponse(arrow_ipc=data, truncated=result.truncated)

    async def SqlStream(
        self,
        request: herald_pb2.SqlRequest,
        context: grpc.aio.ServicerContext[herald_pb2.SqlRequest, herald_pb2.SqlChunk],
    ) -> AsyncIterator[herald_pb2.SqlChunk]:
        # One record batch at a time from DuckDB (on the SQL lane's threads), each written out
        # before the next is read: with gRPC's flow control on every write, the server holds
        # about one batch per stream whatever the result's size, and a slow client slows the
        # query. The stream holds one SQL slot from open to close.
        try:
            self._auth.check(authorization(context), Scope.READ)
            ticket = self._sql_lane.admit()
        except HeraldError as exc:
            self._sql_ended("stream", exc)
            await abort_grpc(context, exc)
            raise
        limit = self._reader.sql_time_limit(all_rows=request.all_rows)
        ended = False  # its outcome counted (else the client left: cancelled)
        try:
            opening = ticket.run(self._reader.sql_stream, request.sql, all_rows=request.all_rows)
            try:
                stream = await within(opening, _answer_by(limit))
            except BaseException as exc:
                # Timed out or the client left while the statement started: end its
                # transaction once it has (an open read holds off the store's checkpoints).
                opening.add_done_callback(lambda done: _close_opened(done, ticket))
                if isinstance(exc, TimeoutError):
                    raise time_limit_error(limit) from None
                raise
        except HeraldError as exc:
            self._sql_ended("stream", exc)
            await abort_grpc(context, exc)
            raise
        except BaseException:
            self._metrics.sql_query("stream", "cancelled")
            raise
        try:
            pieces = _IpcPieces()
            writer = pa.ipc.new_stream(pieces, stream.schema)
            while True:
                try:
                    left = None if stream.deadline is None else stream.deadline - monotonic()
                    try:
                        batch = await within(ticket.run(stream.read_next), _answer_by(left))
                    except TimeoutError:
                        raise time_limit_error(limit) from None
                except HeraldError as exc:
                    ended = True
                    self._sql_ended("stream", exc)
                    await abort_grpc(context, exc)
                    raise
                if batch is None:
                    break
                writer.write_batch(batch)
                for piece in pieces.take():
                    yield herald_pb2.SqlChunk(arrow_ipc=piece, rows=stream.rows)
            writer.close()
            for piece in pieces.take():
                yield herald_pb2.SqlChunk(arrow_ipc=piece, rows=stream.rows)
            # Closed and the slot freed before the last message: a client's next statement,
            # sent as soon as this one ends, finds the slot free.
            await ticket.run(stream.close)
            ticket.release()
            ended = True
            self._metrics.sql_query("stream", "ok")
            yield herald_pb2.SqlChunk(truncated=stream.truncated, rows=stream.rows)
        finally:
            if not ended:  # the client went away mid-stream
                self._metrics.sql_query("stream", "cancelled")
            # A cancelled call (the client went away) or a read past the time limit: end the
            # read transaction (close() interrupts a read still running and returns; that
            # read's thread finishes the close). Not awaited: a cancelled handler must not
            # wait here; the slot is freed when the close has run. (Both are idempotent.)
            ticket.run(stream.close)
            ticket.release()


    def _sql_ended(self, kind: str, exc: BaseException) -> None:
        outcome = sql_outcome_of(exc)
        self._metrics.sql_query(kind, outcome)
        if outcome == "busy":
            self._metrics.busy("sql")


def _answer_by(limit: float | None) -> float | None:
    """How long a handler waits for a statement call given ``limit`` seconds left."""
    return None if limit is None else limit + ANSWER_GRACE_SECONDS


def _close_opened(opening: asyncio.Future[SqlRowStream], ticket: SqlTicket) -> None:
    # ``opening`` is done: close the stream if it opened (on the lane: DuckDB calls), then let
    # the slot go. The close needs no loop to run on, so it also works while the server stops.
    if not opening.cancelled() and opening.exception() is None:
        stream = opening.result()
        try:
            ticket.run(stream.close)
        except RuntimeError:  # no running loop any more
            stream.close()
    ticket.release()
