"""``AutomationsClient``: the typed gRPC client for ``herald.v1.Automations`` (the CLI's
``herald automations …``), the other half of ``remote.HeraldClient`` on the same kind of
``Connection``. Errors come back as Herald errors through ``error_from_rpc``, the same mapping
``HeraldClient`` uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import orjson

from collector._proto import automations_pb2, automations_pb2_grpc
from collector.client.connection import Connection, error_from_rpc

Progress = Callable[[int, int], None]
# An automation as the API writes it (Prefect's shape, with id, created, updated), and a list of
# them; named here because the class's own ``list`` method would shadow the builtin in it.
AutomationJson = dict[str, Any]
AutomationList = list[AutomationJson]
FiringList = list[dict[str, Any]]  # firings with their action runs


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

    def _automation(self, method: Any, data: dict[str, Any]) -> AutomationJson:
        out: AutomationJson = self._call(method, data)["automation"]
        return out

    def _automations(self, method: Any, data: dict[str, Any]) -> AutomationList:
        out: AutomationList = self._call(method, data)["automations"]
        return out

    def create(self, automation: dict[str, Any]) -> AutomationJson:
        """Create one automation; returns it as stored (with id, created, updated)."""
        return self._automation(self._stub.Create, {"automation": automation})

    def update(self, automation_id: str, automation: dict[str, Any]) -> AutomationJson:
        """Replace an automation as a whole."""
        return self._automation(self._stub.Update, {"id": automation_id, "automation": automation})

    def delete(self, automation_id: str) -> AutomationJson:
        return self._automation(self._stub.Delete, {"id": automation_id})

    def list(self) -> AutomationList:
        return self._automations(self._stub.List, {})

    def read(self, automation_id: str) -> AutomationJson:
        return self._automations(self._stub.Read, {"id": automation_id})[0]

    def find(self, name: str) -> AutomationList:
        """Every automation with this name (``NotFound`` when there is none)."""
        return self._automations(self._stub.Read, {"name": name})

    def set_enabled(self, automation_id: str, enabled: bool) -> AutomationJson:
        return self._automation(self._stub.SetEnabled, {"id": automation_id, "enabled": enabled})

    def history(
        self, automation_id: str | None = None, limit: int = 50, status: str | None = None
    ) -> FiringList:
        """The newest firings (with their action runs), newest first; with ``status``, only
        firings that have an action run in that status."""
        firings: FiringList = self.history_page(automation_id, limit, status)["firings"]
        return firings

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
