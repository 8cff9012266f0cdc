"""The event grammar (SPEC §2, Prefect P§1–2): models, label rules and limits.

An event describes a resource and an action it took or that was taken on it: ``event`` (the
name), a primary ``resource`` (flat string labels with ``prefect.resource.id``), ``related``
resources (each with a ``prefect.resource.role``), a JSON ``payload``, ``occurred``, ``id`` and
``follows``. Limits are parameters (``Limits``), never globals read inside validators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector.errors import EventTooLarge, InvalidEvent

RESOURCE_ID = "prefect.resource.id"
RESOURCE_ROLE = "prefect.resource.role"
RESOURCE_NAME = "prefect.resource.name"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    """Grammar limits (Prefect's defaults); built from ``LimitsConfig``."""

    max_labels_per_resource: int = 500
    max_related_resources: int = 100
    max_event_name_length: int = 1024
    max_event_bytes: int = 1_500_000


def check_resource(labels: Any, where: str, limits: Limits, *, role: bool = False) -> None:
    """Raise ``InvalidEvent`` naming ``where`` unless ``labels`` is a valid resource."""
    # Hot path (every event of every native request): exact type checks, one pass.
    if type(labels) is not dict:
        if labels is None:
            raise InvalidEvent(f"{where}: is required")
        raise InvalidEvent(f"{where}: must be an object of string labels")
    rid = labels.get(RESOURCE_ID)
    if type(rid) is not str or not rid:
        if rid is None:
            raise InvalidEvent(f"{where}: resources must include the {RESOURCE_ID} label")
        raise InvalidEvent(f"{where}: the {RESOURCE_ID} label must be a non-empty string")
    if role:
        r = labels.get(RESOURCE_ROLE)
        if type(r) is not str or not r:
            raise InvalidEvent(
                f"{where}: related resources must include a non-empty {RESOURCE_ROLE} label"
            )
    if len(labels) > limits.max_labels_per_resource:
        raise InvalidEvent(
            f"{where}: {len(labels)} labels; at most {limits.max_labels_per_resource} are allowed"
        )
    for value in labels.values():
        if type(value) is not str:
            key = next(k for k, v in labels.items() if type(v) is not str)
            raise InvalidEvent(
                f"{where}.{key}: label values must be strings, got {type(labels[key]).__name__}"
            )


def check_event_parts(name: Any, resource: Any, related: Any, limits: Limits) -> None:
    """Validate name, resource and related resources against the grammar and ``limits``."""
    if not isinstance(name, str) or not name:
        raise InvalidEvent("event: the event name must be a non-empty string")
    if len(name) > limits.max_event_name_length:
        raise InvalidEvent(
            f"event: event name must be at most {limits.max_event_name_length} characters"
        )
    check_resource(resource, "resource", limits)
    if not isinstance(related, list):
        raise InvalidEvent("related: must be a list of resources")
    if len(related) > limits.max_related_resources:
        raise InvalidEvent(
            f"related: {len(related)} related resources; "
            f"at most {limits.max_related_resources} are allowed"
        )
    for i, item in enumerate(related):
        check_resource(item, f"related[{i}]", limits, role=True)


def to_utc(value: datetime) -> datetime:
    """Aware datetimes convert to UTC; naive ones are taken as UTC (SPEC §2)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def datetime_to_us(value: datetime) -> int:
    """Microseconds since the Unix epoch, exact (integer maths)."""
    delta = to_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(us: int) -> datetime:
    from datetime import timedelta

    return EPOCH + timedelta(microseconds=us)


def format_time(value: datetime) -> str:
    """Prefect's wire form: ``2021-02-03T04:05:06.000007Z``."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Event(BaseModel):
    """An event as sent by a client. ``id`` and ``occurred`` may be omitted: ingest fills them."""

    model_config = ConfigDict(extra="ignore")

    occurred: datetime | None = Field(None, description="when it happened; naive = UTC")
    event: str = Field(description="the event name, e.g. app.order.shipped")
    resource: dict[str, Any] = Field(description="primary resource labels")
    related: list[dict[str, Any]] = Field(default_factory=list, description="related resources")
    payload: dict[str, Any] = Field(default_factory=dict, description="open-ended JSON")
    id: UUID | None = Field(None, description="dedupe key; defaults to a new UUIDv7")
    follows: UUID | None = Field(None, description="id of an event known to precede this one")

    @field_validator("occurred")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)

    def check(self, limits: Limits) -> None:
        """Raise ``InvalidEvent``/``EventTooLarge`` if the event breaks the grammar or a limit."""
        check_event_parts(self.event, self.resource, self.related, limits)
        size = len(self.to_json())
        if size > limits.max_event_bytes:
            raise EventTooLarge(
                f"event is {size} bytes of JSON; at most {limits.max_event_bytes} are allowed"
            )

    def to_dict(self) -> dict[str, Any]:
        """The Prefect JSON shape, keys in Prefect's order."""
        return {
            "occurred": format_time(self.occurred) if self.occurred else None,
            "event": self.event,
            "resource": self.resource,
            "related": self.related,
            "payload": self.payload,
            "id": str(self.id) if self.id else None,
            "follows": str(self.follows) if self.follows else None,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class ReceivedEvent(Event):
    """An event as stored: ``id``, ``occurred`` and ``received`` are always set."""

    received: datetime

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["received"] = format_time(self.received)
        return out


def parse_event(data: Any, where: str = "event") -> Event:
    """Parse one event from JSON-like data; errors name the field and the rule."""
    try:
        return Event.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "event"
        raise InvalidEvent(f"{where}.{loc}: {first['msg']}") from None
