"""``Connection``: a gRPC channel to a Herald server, shared by the clients of each service
(``remote.HeraldClient``, ``automations.AutomationsClient``), and ``error_from_rpc``, which turns
``grpc.RpcError`` back into Herald errors (the reverse of ``server/status.py``) so callers
handle one hierarchy."""

from __future__ import annotations

import os
from typing import Self

import grpc

from collector import errors as e

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
