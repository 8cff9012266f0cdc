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
            return e.ServerUnreachable(
                f"no Herald server at {address} (is `herald serve` running? "
                "set --address or HERALD_ADDRESS)"
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
        reply = self._call(
            self._stub.CountEvents,
            herald_pb2.CountRequest(
                filter_json=orjson.dumps(filter) if filter is not None else b"",
                countable=countable,
                time_unit=time_unit,
                time_interval=time_interval,
            ),
        )
        out: list[dict[str, Any]] = orjson.loads(reply.counts_json)
        return out

    def get(self, event_id: str) -> dict[str, Any]:
        reply = self._call(self._stub.GetEvent, herald_pb2.GetEventRequest(id=event_id))
        out: dict[str, Any] = orjson.loads(reply.event_json)
        return out

    def sql(self, sql: str) -> tuple[pa.Table, bool]:
        """Run one read-only statement; returns (Arrow table, truncated)."""
        reply = self._call(self._stub.Sql, herald_pb2.SqlRequest(sql=sql), timeout=600)
        return pa.ipc.open_stream(reply.arrow_ipc).read_all(), reply.truncated

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
