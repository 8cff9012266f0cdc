"""Herald's automations gRPC service (``herald.v1.Automations``): create, update, delete, list,
read, pause/resume, history and backtests. Each method is auth → decode JSON → call the
``AutomationService`` → encode JSON; writes need the ``admin`` scope, reads ``read``.

A backtest runs in a worker thread (``ThreadWork``) and streams every progress report it
makes, in order, then its result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import grpc
import orjson

from collector._proto import automations_pb2, automations_pb2_grpc
from collector.automations.backtest import firing_summary
from collector.automations.service import AutomationService, validate_automation
from collector.config import Scope
from collector.domain.automations import parse_trigger
from collector.errors import HeraldError, InvalidInput
from collector.server.auth import Authenticator
from collector.server.native_grpc import authorization
from collector.server.status import abort_grpc

HISTORY_DEFAULT = 50
HISTORY_MAX = 1000
RUN_STATUSES = ("triggered", "executed", "failed", "cancelled", "skipped")
# Every method of the service takes and answers JSON in one message type.
JsonContext = grpc.aio.ServicerContext[automations_pb2.JsonRequest, automations_pb2.JsonReply]


def _request(request: automations_pb2.JsonRequest) -> dict[str, Any]:
    if not request.json:
        return {}
    try:
        data = orjson.loads(request.json)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request must be a JSON object")
    return data


def _reply(data: dict[str, Any]) -> automations_pb2.JsonReply:
    return automations_pb2.JsonReply(json=orjson.dumps(data))


def _uuid(data: dict[str, Any], key: str = "id") -> UUID:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key}: required (an automation id)")
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput(f"{key}: {value!r} is not a valid automation id") from None


def _time(data: dict[str, Any], key: str, default: datetime | None = None) -> datetime:
    value = data.get(key)
    if value is None:
        if default is None:
            raise InvalidInput(f"{key}: required (an ISO 8601 time)")
        return default
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{key}: {value!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


T = TypeVar("T")
Report = Callable[[int, int], None]  # (done, total)


class ThreadWork(Generic[T]):
    """Blocking work run in a worker thread, its progress streamed to the event loop.

    ``work(report, stop)`` calls ``report(done, total)`` as it goes and returns early once
    ``stop()`` is true. ``progress()`` yields every report, in order, and ends only after the
    last one: the thread puts an end marker on the queue after its final report, so reports
    still queued when the work finishes are handed out too (watching the work's future
    instead would race with them and drop the final ``done == total``). Leaving
    ``progress()`` early (the client went away) tells the work to stop. ``result()`` is the
    work's return value or raises its error."""

    def __init__(self, work: Callable[[Report, Callable[[], bool]], T]) -> None:
        self._work = work
        self._stop = threading.Event()
        self._task: asyncio.Future[T] | None = None

    async def progress(self) -> AsyncGenerator[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        # Unbounded, but small: a backtest reports once per chunk of events read.
        queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()

        def report(done: int, total: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (done, total))

        def run() -> T:
            try:
                return self._work(report, self._stop.is_set)
            finally:
                # Queued behind every report this thread made: the reader sees them all first.
                loop.call_soon_threadsafe(queue.put_nowait, None)

        self._task = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Ask the work to stop at its next check (the call ended or was cancelled)."""
        self._stop.set()

    async def result(self) -> T:
        if self._task is None:
            raise RuntimeError("progress() has not been started")
        return await self._task


class AutomationsServicer(automations_pb2_grpc.AutomationsServicer):
    def __init__(self, service: AutomationService, auth: Authenticator) -> None:
        self._service = service
        self._auth = auth

    async def _unary(
        self,
        request: automations_pb2.JsonRequest,
        context: JsonContext,
        scope: Scope,
        handler: Any,
    ) -> automations_pb2.JsonReply:
        try:
            self._auth.check(authorization(context), scope)
            return _reply(await handler(_request(request)))
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise  # unreachable: abort raises

    async def Create(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            if "automation" not in data:
                raise InvalidInput("automation: required")
            stored = await self._service.create(data["automation"])
            return {"automation": stored.to_dict()}

        return await self._unary(request, context, Scope.ADMIN, handle)

    async def Update(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            if "automation" not in data:
                raise InvalidInput("automation: required")
            stored = await self._service.update(_uuid(data), data["automation"])
            return {"automation": stored.to_dict()}

        return await self._unary(request, context, Scope.ADMIN, handle)

    async def Delete(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            stored = await self._service.delete(_uuid(data))
            return {"automation": stored.to_dict()}

        return await self._unary(request, context, Scope.ADMIN, handle)

    def _reveal(self, data: dict[str, Any], context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        """Reads show secrets as markers; ``"reveal_secrets": true`` shows the values to an
        admin token (and is refused for any other)."""
        if not data.get("reveal_secrets"):
            return False
        self._auth.check(authorization(context), Scope.ADMIN)
        return True

    async def List(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            reveal = self._reveal(data, context)
            found = await self._service.list_automations()
            return {"automations": [s.to_dict(reveal=reveal) for s in found]}

        return await self._unary(request, context, Scope.READ, handle)

    async def Read(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            reveal = self._reveal(data, context)
            if data.get("name") is not None:
                found = await self._service.find(str(data["name"]))
            else:
                found = [await self._service.read(_uuid(data))]
            return {"automations": [s.to_dict(reveal=reveal) for s in found]}

        return await self._unary(request, context, Scope.READ, handle)

    async def SetEnabled(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            enabled = data.get("enabled")
            if not isinstance(enabled, bool):
                raise InvalidInput("enabled: required (true or false)")
            stored = await self._service.set_enabled(_uuid(data), enabled)
            return {"automation": stored.to_dict()}

        return await self._unary(request, context, Scope.ADMIN, handle)

    async def History(
        self, request: automations_pb2.JsonRequest, context: JsonContext
    ) -> automations_pb2.JsonReply:
        async def handle(data: dict[str, Any]) -> dict[str, Any]:
            automation_id = _uuid(data, "automation_id") if data.get("automation_id") else None
            limit = data.get("limit") or HISTORY_DEFAULT
            if not isinstance(limit, int) or not 1 <= limit <= HISTORY_MAX:
                raise InvalidInput(f"limit: must be a whole number from 1 to {HISTORY_MAX}")
            status = data.get("status")
            if status is not None and status not in RUN_STATUSES:
                raise InvalidInput(f"status: must be one of {', '.join(RUN_STATUSES)}")
            return {
                "firings": await self._service.history(automation_id, limit, status),
                "run_counts": await self._service.run_counts(automation_id),
            }

        return await self._unary(request, context, Scope.READ, handle)

    async def _backtest_subject(self, data: dict[str, Any]) -> Any:
        if data.get("automation") is not None:
            return validate_automation(data["automation"])
        if data.get("trigger") is not None:
            trigger = parse_trigger(data["trigger"])
            return validate_automation(
                {
                    "name": "backtest",
                    "trigger": trigger.model_dump(mode="json"),
                    "actions": [{"type": "do-nothing"}],
                }
            )
        if data.get("id") is not None:
            return (await self._service.read(_uuid(data))).automation
        raise InvalidInput("give an automation, a trigger or an automation id to backtest")

    async def Backtest(
        self,
        request: automations_pb2.JsonRequest,
        context: JsonContext,
    ) -> AsyncIterator[automations_pb2.JsonReply]:
        try:
            self._auth.check(authorization(context), Scope.READ)
            data = _request(request)
            automation = await self._backtest_subject(data)
            since = _time(data, "since")
            until = _time(data, "until", datetime.now(UTC))
        except HeraldError as exc:
            await abort_grpc(context, exc)
            raise
        running = ThreadWork(
            lambda report, stop: self._service.backtest(
                automation, since, until, progress=report, stop=stop
            )
        )
        try:
            async for done, total in running.progress():
                yield _reply({"progress": {"done": done, "total": total}})
            try:
                firings, events, truncated = await running.result()
            except HeraldError as exc:
                await abort_grpc(context, exc)
                raise
            yield _reply(
                {
                    "firings": [firing_summary(f) for f in firings],
                    "events": events,
                    "truncated": truncated,
                    "automation": {"id": str(automation.id), "name": automation.name},
                }
            )
        finally:
            running.stop()
