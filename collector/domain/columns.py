"""``EventColumns``: a batch of validated events held column by column.

Every ingest path (native gRPC/HTTP, OTLP traces and logs) appends to one of these, and the
store writer turns it into an Arrow table without per-event objects. Resource and related
labels are kept as JSON text: the store keeps them as DuckDB ``JSON``, which inserts several
times faster than ``MAP`` columns (docs/benchmarks.md) and still reads naturally in SQL
(``resource->>'service.name'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import orjson

from collector.domain.events import ReceivedEvent, us_to_datetime
from collector.domain.filters import EventView

_dumps = orjson.dumps


@dataclass(slots=True)
class EventColumns:
    """Column-oriented events. ``occurred_us`` is microseconds since the Unix epoch (UTC)."""

    ids: list[str] = field(default_factory=list)
    occurred_us: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    resource_ids: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)  # JSON object of labels
    related: list[str] = field(default_factory=list)  # JSON array of label objects
    payloads: list[str] = field(default_factory=list)  # JSON object
    follows: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(
        self,
        id: str,
        occurred_us: int,
        name: str,
        resource: dict[str, str],
        related: list[dict[str, str]],
        payload_json: str,
        follows: str | None = None,
    ) -> None:
        """Add one event. The caller has validated it; ``resource`` holds prefect.resource.id."""
        self.ids.append(id)
        self.occurred_us.append(occurred_us)
        self.names.append(name)
        self.resource_ids.append(resource["prefect.resource.id"])
        self.resources.append(_dumps(resource).decode())
        self.related.append(_dumps(related).decode() if related else "[]")
        self.payloads.append(payload_json)
        self.follows.append(follows)

    def append_json(
        self,
        id: str,
        occurred_us: int,
        name: str,
        resource_id: str,
        resource_json: str,
        related_json: str,
        payload_json: str,
        follows: str | None = None,
    ) -> None:
        """Add one event whose labels are already JSON text (hot paths reuse a resource's JSON
        for every span or record under it)."""
        self.ids.append(id)
        self.occurred_us.append(occurred_us)
        self.names.append(name)
        self.resource_ids.append(resource_id)
        self.resources.append(resource_json)
        self.related.append(related_json)
        self.payloads.append(payload_json)
        self.follows.append(follows)

    def resource(self, i: int) -> dict[str, str]:
        """Event ``i``'s primary resource labels (tests, live tail, evaluator)."""
        out: dict[str, str] = orjson.loads(self.resources[i])
        return out

    def related_resources(self, i: int) -> list[dict[str, str]]:
        """Event ``i``'s related resources, in order."""
        out: list[dict[str, str]] = orjson.loads(self.related[i])
        return out

    def received_event(self, i: int, received_us: int) -> ReceivedEvent:
        """Event ``i`` as a ``ReceivedEvent`` received at ``received_us`` (automations:
        evaluation, replay, backtests). Built without re-validating: columns only ever hold
        events that were validated on the way in."""
        occurred, name, resource, related, event_id = self._decoded(i)
        follows = self.follows[i]
        return ReceivedEvent.model_construct(
            occurred=occurred,
            event=name,
            resource=resource,
            related=related,
            payload=orjson.loads(self.payloads[i]),
            id=event_id,
            follows=UUID(follows) if follows else None,
            received=us_to_datetime(received_us),
        )

    def view(self, i: int) -> EventView:
        """Event ``i`` as filters read it (the live tail). The payload stays JSON text: the
        tail matches many events and only text search reads the payload, as text."""
        occurred, name, resource, related, event_id = self._decoded(i)
        return EventView(
            event=name,
            occurred=occurred,
            id=event_id,
            resource=resource,
            related=related,
            payload=self.payloads[i],
        )

    def _decoded(self, i: int) -> tuple[datetime, str, dict[str, str], list[dict[str, str]], UUID]:
        return (
            us_to_datetime(self.occurred_us[i]),
            self.names[i],
            orjson.loads(self.resources[i]),
            orjson.loads(self.related[i] or "[]"),
            UUID(self.ids[i]),
        )
