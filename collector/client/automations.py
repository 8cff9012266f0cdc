"""``AutomationsClient``: the typed gRPC client for ``herald.v1.Automations`` (the CLI's
``herald automations …``). Errors come back as Herald errors through ``error_from_rpc``, the
same mapping ``HeraldClient`` uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import orjson

from collector._proto import automations_pb2, automations_pb2_grpc
from collector.client import Connection, error_from_rpc

Progress = Callable[[int, int], None]


class AutomationsClient(Connection):
    """A connection to a Herald server's automations API."""

    def __init__(
        self, address: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        super().__init__(address, token, timeout)
        self._stub = automations_pb2_grpc.AutomationsStub(self._channel)

    def _call(self, method: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = automations_pb2.JsonRequest(json=orjson.dumps(data))
        try:
            reply = method(request, timeout=self.timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None
        out: dict[str, Any] = orjson.loads(reply.json)
        return out

    def create(self, automation: dict[str, Any]) -> dict[str, Any]:
        """Create one automation; returns it as stored (with id, created, updated)."""
        return self._call(self._stub.Create, {"automation": automation})["automation"]  # type: ignore[no-any-return]

    def update(self, automation_id: str, automation: dict[str, Any]) -> dict[str, Any]:
        """Replace an automation as a whole."""
        reply = self._call(self._stub.Update, {"id": automation_id, "automation": automation})
        return reply["automation"]  # type: ignore[no-any-return]

    def delete(self, automation_id: str) -> dict[str, Any]:
        return self._call(self._stub.Delete, {"id": automation_id})["automation"]  # type: ignore[no-any-return]

    def list(self) -> list[dict[str, Any]]:
        return self._call(self._stub.List, {})["automations"]  # type: ignore[no-any-return]

    def read(self, automation_id: str) -> dict[str, Any]:
        return self._call(self._stub.Read, {"id": automation_id})["automations"][0]  # type: ignore[no-any-return]

    def find(self, name: str) -> list[dict[str, Any]]:
        """Every automation with this name (``NotFound`` when there is none)."""
        return self._call(self._stub.Read, {"name": name})["automations"]  # type: ignore[no-any-return]

    def set_enabled(self, automation_id: str, enabled: bool) -> dict[str, Any]:
        reply = self._call(self._stub.SetEnabled, {"id": automation_id, "enabled": enabled})
        return reply["automation"]  # type: ignore[no-any-return]

    def history(
        self, automation_id: str | None = None, limit: int = 50, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest firings (with their action runs), newest first; with ``status``, only
        firings that have an action run in that status."""
        return self.history_page(automation_id, limit, status)["firings"]  # type: ignore[no-any-return]

    def history_page(
        self, automation_id: str | None = None, limit: int = 50, status: str | None = None
    ) -> dict[str, Any]:
        """``{"firings": [...], "run_counts": {status: n}}`` — the counts are over every
        action run (of the automation, or all), not only the firings listed."""
        data: dict[str, Any] = {"limit": limit}
        if automation_id:
            data["automation_id"] = automation_id
        if status:
            data["status"] = status
        return self._call(self._stub.History, data)

    def backtest(
        self,
        *,
        since: str,
        until: str | None = None,
        automation: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
        automation_id: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Run a backtest; ``progress(done, total)`` is called as events are read. Returns
        ``{"firings": [...], "events": n, "truncated": bool, "automation": {...}}``."""
        data: dict[str, Any] = {"since": since}
        if until:
            data["until"] = until
        if automation is not None:
            data["automation"] = automation
        if trigger is not None:
            data["trigger"] = trigger
        if automation_id is not None:
            data["id"] = automation_id
        request = automations_pb2.JsonRequest(json=orjson.dumps(data))
        stream = self._stub.Backtest(request, metadata=self._metadata(), timeout=3600)
        result: dict[str, Any] = {}
        try:
            for message in self._iterate(stream):
                item = orjson.loads(message.json)
                if "progress" in item:
                    if progress is not None:
                        progress(item["progress"]["done"], item["progress"]["total"])
                else:
                    result = item
        finally:
            stream.cancel()
        return result

    def _iterate(self, stream: Any) -> Iterator[Any]:
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None
