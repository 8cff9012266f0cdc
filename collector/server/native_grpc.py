"""Herald's native gRPC service (``herald.v1.Herald``): decode → ingest → reply. No storage here."""

from __future__ import annotations

import grpc

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.config import Scope
from collector.errors import HeraldError
from collector.server.auth import Authenticator
from collector.server.ingest import NativeIngest
from collector.server.status import abort_grpc


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The ``authorization`` metadata value of the call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


class HeraldServicer(herald_pb2_grpc.HeraldServicer):
    def __init__(self, ingest: NativeIngest, auth: Authenticator) -> None:
        self._ingest = ingest
        self._auth = auth

    async def Emit(  # noqa: N802 (gRPC method name)
        self, request: herald_pb2.EmitRequest, context: grpc.aio.ServicerContext
    ) -> herald_pb2.EmitResponse:
        try:
            self._auth.check(authorization(context), Scope.INGEST)
            accepted, errors = await self._ingest.emit_json(request.events_json)
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises
        return herald_pb2.EmitResponse(
            accepted=accepted,
            errors=[herald_pb2.EmitError(index=i, message=m) for i, m in errors],
        )
