"""What the gRPC server lets in, decided before a call's request message is read.

gRPC's C-core buffers a whole request message before the handler sees it, and it only starts
receiving one when the server asks for it. So every gRPC call passes ``GrpcAdmission`` first,
which holds the message back until the call is admitted:

1. **Auth.** With tokens configured, a call without a known token is answered
   ``UNAUTHENTICATED`` from its headers alone; its body is never received (measured: 16
   concurrent unauthenticated 60 MiB ``Emit`` calls moved the server's RSS by < 10 MB, against
   +1.1 GB when the handler checked the token after gRPC had received the message). Scopes are
   still checked by each handler.
2. **Calls.** At most ``server.grpc_max_concurrent_rpcs`` calls are handled at once (live tails
   included); one more is answered ``UNAVAILABLE`` with a retry hint.
3. **Bytes.** ``InflightBudget`` holds ``server.max_inflight_bytes``. A call reserves
   ``server.max_receive_bytes`` (the most its message can be: its real size is unknown until it
   has arrived) before its message is read, keeps its message's real size once it has, and
   gives that back when it is answered. A call that finds no room waits its turn (first come,
   first served) for up to ``ADMISSION_WAIT_SECONDS``, then is answered ``UNAVAILABLE`` with a
   retry hint. While it waits its message is not read: with the server's BDP probe off
   (``app.py``) gRPC buffers at most one 64 KiB flow-control window of it.

Busy answers go through ``status.abort_grpc`` (``Busy`` → ``UNAVAILABLE`` + ``RetryInfo``), so
OTLP exporters and Herald's clients retry them. The budget counts request bytes as received
(after gzip); what a handler builds from them (parsed JSON, columns) is a multiple of that.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError

from collector.domain.self_metrics import NoMetrics, SelfMetrics
from collector.errors import Busy, HeraldError, InvalidInput
from collector.server.auth import Authenticator, authorization_metadata
from collector.server.status import abort_grpc

# How long a call waits for room in the byte budget before it is answered busy. Long enough
# for a burst of large requests to drain one after another, short of any exporter's timeout
# (the OTel SDKs default to 10 s).
ADMISSION_WAIT_SECONDS = 5.0
BUSY_RETRY_SECONDS = 1.0

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
# grpc.aio's handlers are coroutines and async generators, while the stubs type
# RpcMethodHandler's callables as grpc's synchronous ones: the wrappers below hold them as Any.
# (A string: grpcio's runtime classes are not subscriptable.)
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class InflightBudget:
    """A byte budget shared by concurrent calls: ``reserve`` waits (first come, first served)
    until the bytes fit, ``Reservation.shrink`` and ``release`` give them back."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    async def reserve(self, nbytes: int, timeout: float) -> Reservation:
        """Take ``nbytes``, waiting up to ``timeout`` s; ``Busy`` if they do not fit by then."""
        if nbytes > self.capacity:
            raise ValueError(f"{nbytes} bytes can never fit a {self.capacity}-byte budget")
        if not self._waiters and nbytes <= self._free:
            self._free -= nbytes
            return Reservation(self, nbytes)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self._give_back(nbytes)  # granted just as the wait ended: hand it on
            else:
                granted.cancel()
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
                self._grant()  # a smaller request behind this one may fit now
            if isinstance(exc, TimeoutError):
                raise Busy(
                    "the server is receiving as many request bytes as it may hold "
                    "(server.max_inflight_bytes); retry later",
                    retry_after=BUSY_RETRY_SECONDS,
                ) from None
            raise
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        self._free += nbytes
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            nbytes, granted = self._waiters[0]
            if granted.done():  # its caller gave up
                self._waiters.popleft()
                continue
            if nbytes > self._free:
                return  # first come, first served: nobody overtakes the head
            self._waiters.popleft()
            self._free -= nbytes
            granted.set_result(None)


class Reservation:
    """Bytes held in an ``InflightBudget`` until ``release`` (idempotent)."""

    def __init__(self, budget: InflightBudget, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        """Keep only ``nbytes`` (the message's real size), giving the rest back."""
        if nbytes < self.nbytes:
            excess, self.nbytes = self.nbytes - nbytes, nbytes
            self._budget._give_back(excess)

    def release(self) -> None:
        if self.nbytes:
            nbytes, self.nbytes = self.nbytes, 0
            self._budget._give_back(nbytes)


class GrpcAdmission(grpc.aio.ServerInterceptor):
    """Wraps every unary-request method so that auth, the call cap and the byte budget are
    decided before its request message is read (see the module doc)."""

    def __init__(
        self,
        auth: Authenticator,
        budget: InflightBudget,
        *,
        max_calls: int,
        max_request_bytes: int,
        metrics: SelfMetrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._auth = auth
        self._budget = budget
        self._max_calls = max_calls
        self._max_request_bytes = max_request_bytes
        self.calls = 0  # calls admitted and not yet answered

    @property
    def budget(self) -> InflightBudget:
        return self._budget

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        # Herald has no request-streaming methods; one would read its messages itself and is
        # passed through (grpcio's receive limit still bounds each message).
        if handler is None or handler.request_streaming:
            return handler
        if handler.response_streaming:
            return self._wrap_unary_stream(handler)
        return self._wrap_unary_unary(handler)

    def _wrap_unary_unary(self, handler: _Handler) -> _Handler:
        inner: Any = handler.unary_unary
        decode = handler.request_deserializer

        async def admitted(requests: AsyncIterable[bytes], context: Any) -> Any:
            async with self._admit(requests, context, decode) as request:
                return await inner(request, context)

        # Registered as request-streaming (a server-side choice; the wire is the same) so that
        # grpcio does not read the message before ``_admit`` decides to.
        return grpc.stream_unary_rpc_method_handler(
            admitted, response_serializer=handler.response_serializer
        )

    def _wrap_unary_stream(self, handler: _Handler) -> _Handler:
        inner: Any = handler.unary_stream
        decode = handler.request_deserializer
        if inspect.isasyncgenfunction(inner):

            async def admitted_gen(requests: AsyncIterable[bytes], context: Any) -> Any:
                async with self._admit(requests, context, decode) as request:
                    async for response in inner(request, context):
                        yield response

            method: Any = admitted_gen
        else:  # a coroutine that writes its responses with context.write

            async def admitted_writer(requests: AsyncIterable[bytes], context: Any) -> None:
                async with self._admit(requests, context, decode) as request:
                    await inner(request, context)

            method = admitted_writer
        return grpc.stream_stream_rpc_method_handler(
            method, response_serializer=handler.response_serializer
        )

    @asynccontextmanager
    async def _admit(
        self,
        requests: AsyncIterable[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
        decode: Callable[[bytes], Any] | None,
    ) -> AsyncIterator[Any]:
        """Auth, a call slot and room in the budget, then the request (decoded)."""
        try:
            self._auth.authenticate(authorization_metadata(context.invocation_metadata()))
            if self.calls >= self._max_calls:
                self._metrics.busy("grpc_calls")
                raise Busy(
                    f"the server is handling {self.calls} gRPC calls, its limit "
                    "(server.grpc_max_concurrent_rpcs); retry later",
                    retry_after=BUSY_RETRY_SECONDS,
                )
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises
        self.calls += 1
        try:
            reservation = await self._reserve(context)
            try:
                try:
                    # grpcio's _MessageReceiver iterates through an async generator.
                    messages = cast(AsyncGenerator[bytes, None], aiter(requests))
                    raw = await anext(messages, None)
                    # Left open, grpcio's message generator keeps the message in its
                    # suspended frame well after the call ends (measured: 900 quick 1 MB
                    # calls left +840 MB of RSS, +90 MB once closed).
                    await messages.aclose()
                    if raw is None:  # the client half-closed without a message (or left)
                        raise InvalidInput("the call carried no request message")
                    reservation.shrink(len(raw))
                    request = raw if decode is None else _decode(decode, raw)
                    # The decoded message has its own copy; the raw one need not wait for the
                    # handler (grpcio's own unary path keeps it until the call ends).
                    del raw
                except HeraldError as exc:
                    await abort_grpc(context, exc)
                    raise  # unreachable: abort raises
                yield request
            finally:
                reservation.release()
        finally:
            self.calls -= 1

    async def _reserve(self, context: grpc.aio.ServicerContext[Any, Any]) -> Reservation:
        """Room for the largest message, waited for within the call's deadline."""
        wait = ADMISSION_WAIT_SECONDS
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining)
        try:
            return await self._budget.reserve(self._max_request_bytes, wait)
        except Busy as exc:
            self._metrics.busy("grpc_bytes")
            await abort_grpc(context, exc)


def _decode(decode: Callable[[bytes], Any], raw: bytes) -> Any:
    # grpcio would answer an undecodable message with UNKNOWN; it is the caller's mistake.
    try:
        return decode(raw)
    except DecodeError as exc:
        raise InvalidInput(f"the request message could not be decoded: {exc}") from None
