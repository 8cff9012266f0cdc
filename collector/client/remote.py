"""``HeraldClient``: the client of a server's ``herald.v1.Herald`` service (ingest, the feed,
counts, one event, one trace, the live tail, SQL) — the online ``HeraldReader`` the CLI and
SDK use — and ``RemoteSqlStream``, a streamed SQL result. Errors come back as Herald errors
(``connection.error_from_rpc``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import orjson
import pyarrow as pa

from collector import errors as e
from collector._proto import herald_pb2, herald_pb2_grpc
from collector.client.connection import Connection, error_from_rpc
from collector.client.interface import CountGroups, EventJson, EventPage, HeraldReader, SqlAnswer
from collector.domain.traces import TraceJson


class HeraldClient(Connection, HeraldReader):
    """A connection to a Herald server's gRPC port: the ``HeraldReader`` that asks a server,
    plus what only a server does (``emit``, ``tail``)."""

    def __init__(
        self, address: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        super().__init__(address, token, timeout)
        self._stub = herald_pb2_grpc.HeraldStub(self._channel)

    def emit(self, events: list[dict[str, Any]]) -> tuple[int, list[tuple[int, str]]]:
        """Send events (Prefect's JSON shape); returns (accepted, [(index, reason)])."""
        request = herald_pb2.EmitRequest(events_json=orjson.dumps(events))
        try:
            reply = self._stub.Emit(request, timeout=self.timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None
        return reply.accepted, [(err.index, err.message) for err in reply.errors]

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def query(
        self, filter: dict[str, Any] | None, limit: int | None = None, page_token: str | None = None
    ) -> EventPage:
        """One feed page: ``{"events": [...], "total": n, "next_page": token | None}``."""
        reply = self._call(
            self._stub.QueryEvents,
            herald_pb2.QueryRequest(
                filter_json=orjson.dumps(filter) if filter is not None else b"",
                limit=limit or 0,
                page_token=page_token or "",
            ),
        )
        return {
            "events": orjson.loads(reply.events_json),
            "total": reply.total,
            "next_page": reply.next_page or None,
            "total_is_lower_bound": reply.total_is_lower_bound,
        }

    def count_groups(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
        limit: int | None = None,
    ) -> CountGroups:
        """Counts cut to the ``limit`` largest groups (event/resource), and how many groups
        there were in all."""
        reply = self._call(
            self._stub.CountEvents,
            herald_pb2.CountRequest(
                filter_json=orjson.dumps(filter) if filter is not None else b"",
                countable=countable,
                time_unit=time_unit,
                time_interval=time_interval,
                limit=limit or 0,
            ),
        )
        return CountGroups(orjson.loads(reply.counts_json), reply.groups)

    def get(self, event_id: str) -> EventJson:
        reply = self._call(self._stub.GetEvent, herald_pb2.GetEventRequest(id=event_id))
        out: EventJson = orjson.loads(reply.event_json)
        return out

    def trace(self, trace_id: str) -> TraceJson:
        reply = self._call(self._stub.GetTrace, herald_pb2.GetTraceRequest(trace_id=trace_id))
        out: TraceJson = orjson.loads(reply.trace_json)
        return out

    def sql(self, sql: str) -> SqlAnswer:
        """Run one read-only statement under the server's row limit (``query.sql_max_rows``);
        returns (Arrow table, truncated). Streamed, so no result is too big for one message."""
        with self.sql_stream(sql, all_rows=False) as stream:
            return SqlAnswer(stream.read_all(), stream.truncated)

    def sql_stream(self, sql: str, *, all_rows: bool) -> RemoteSqlStream:
        """Run one read-only statement and stream its result (``all_rows``: every row, for an
        export). Use as a context manager; leaving it early cancels the call."""
        call = self._stub.SqlStream(
            herald_pb2.SqlRequest(sql=sql, all_rows=all_rows), metadata=self._metadata()
        )
        return RemoteSqlStream(call, self.address)

    def tail(
        self, filter: dict[str, Any] | None, backfill: bool = True, backfill_limit: int = 0
    ) -> Iterator[tuple[str, Any]]:
        """Live events: yields ``("event", dict)`` and ``("lagged", missed_count)``."""
        stream = self._stub.Tail(
            herald_pb2.TailRequest(
                filter_json=orjson.dumps(filter) if filter is not None else b"",
                backfill=backfill,
                backfill_limit=backfill_limit,
            ),
            metadata=self._metadata(),
        )
        try:
            for message in stream:
                if message.WhichOneof("item") == "lagged":
                    yield "lagged", message.lagged
                else:
                    yield "event", orjson.loads(message.event_json)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise error_from_rpc(exc, self.address) from None
        finally:
            stream.cancel()


class _ChunkFile:
    """A read-only file over the ``SqlChunk`` messages of a call, for Arrow's IPC stream
    reader: ``read(n)`` returns exactly ``n`` bytes until the stream ends (a short read would
    make Arrow report a truncated message)."""

    closed = False

    def __init__(self, stream: RemoteSqlStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            piece = self._stream._next_piece()
            if piece is None:
                break
            self._buffer += piece
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._position += size
        return out

    def close(self) -> None:
        pass


class RemoteSqlStream:
    """The result of ``SqlStream`` as record batches: ``schema``, iteration, ``rows`` (rows
    received), ``truncated`` (known once the batches are read). The same shape as the store's
    ``SqlStream``, so the CLI writes a file alike online and offline."""

    def __init__(self, call: Any, address: str) -> None:
        self._call = call
        self._address = address
        self._error: e.HeraldError | None = None
        self._ended = False
        self.rows = 0
        self.truncated = False
        try:
            self._reader = pa.ipc.open_stream(_ChunkFile(self))
        except Exception:
            self._raise_failure()
            raise
        self.schema: pa.Schema = self._reader.schema

    def _next_piece(self) -> bytes | None:
        """The next non-empty piece of the IPC stream, or ``None`` when the call is done."""
        while not self._ended:
            try:
                chunk = next(self._call)
            except StopIteration:
                self._ended = True
                break
            except grpc.RpcError as exc:
                self._ended = True
                self._error = error_from_rpc(exc, self._address)
                raise self._error from None
            self.rows = chunk.rows
            self.truncated = self.truncated or chunk.truncated
            if chunk.arrow_ipc:
                piece: bytes = chunk.arrow_ipc
                return piece
        return None

    def _raise_failure(self) -> None:
        # Arrow wraps what ``_ChunkFile.read`` raised; the Herald error behind it is the news.
        if self._error is not None:
            raise self._error from None

    def read_next(self) -> pa.RecordBatch | None:
        """The next batch, or ``None`` at the end of the result."""
        try:
            return self._reader.read_next_batch()
        except StopIteration:
            # The end-of-stream marker was read; the last message (``truncated``) follows.
            while self._next_piece() is not None:
                pass
            return None
        except Exception:
            self._raise_failure()
            raise

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.read_next()) is not None:
            yield batch

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        """Cancel the call if it is still running (the server then ends its transaction)."""
        if not self._ended:
            self._call.cancel()
            self._ended = True

    def __enter__(self) -> RemoteSqlStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
