"""``HeraldClient``: the typed gRPC client the CLI and SDK use. Turns ``grpc.RpcError`` back
into Herald errors (the reverse of ``server/status.py``) so callers handle one hierarchy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Self

import grpc
import orjson
import pyarrow as pa

from collector import errors as e
from collector._proto import herald_pb2, herald_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:4317"

_FROM_CODE: dict[grpc.StatusCode, type[e.HeraldError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.PayloadTooLarge,
    grpc.StatusCode.UNAUTHENTICATED: e.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: e.PermissionDenied,
    grpc.StatusCode.NOT_FOUND: e.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: e.Conflict,
}


def error_from_rpc(exc: grpc.RpcError, address: str) -> e.HeraldError:
    """The Herald error a failed call stands for."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        if details and ("connect" in details.lower() or "unavailable" == details.lower()):
            # No "how to set the address" here: the CLI (--address) and the SDK
            # (HERALD_ADDRESS, EventsWorker(address=…)) each add the hint that fits their user.
            return e.ServerUnreachable(
                f"no Herald server at {address} (is `herald serve` running?)"
            )
        return e.Busy(details or "server busy", retry_after=1.0)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return e.ServerUnreachable(f"the server at {address} did not answer in time")
    return _FROM_CODE.get(code, e.HeraldError)(details or str(code))


class Connection:
    """A gRPC channel to a Herald server: address and token from arguments or ``HERALD_*``,
    the server's 64 MiB message limit, bearer metadata. Clients for each service extend it."""

    def __init__(
        self, address: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.address = address or os.environ.get("HERALD_ADDRESS") or DEFAULT_ADDRESS
        self.token = token if token is not None else os.environ.get("HERALD_TOKEN")
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeraldClient(Connection):
    """A connection to a Herald server's gRPC port."""

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
    ) -> dict[str, Any]:
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
        }

    def count(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
    ) -> list[dict[str, Any]]:
        return self.count_groups(filter, countable, time_unit, time_interval)[0]

    def count_groups(
        self,
        filter: dict[str, Any] | None,
        countable: str,
        time_unit: str = "day",
        time_interval: float = 1.0,
        limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
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
        out: list[dict[str, Any]] = orjson.loads(reply.counts_json)
        return out, reply.groups

    def get(self, event_id: str) -> dict[str, Any]:
        reply = self._call(self._stub.GetEvent, herald_pb2.GetEventRequest(id=event_id))
        out: dict[str, Any] = orjson.loads(reply.event_json)
        return out

    def sql(self, sql: str) -> tuple[pa.Table, bool]:
        """Run one read-only statement under the server's row limit (``query.sql_max_rows``);
        returns (Arrow table, truncated). Streamed, so no result is too big for one message."""
        with self.sql_stream(sql, all_rows=False) as stream:
            return stream.read_all(), stream.truncated

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
                return chunk.arrow_ipc
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
