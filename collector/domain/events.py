"""The event grammar (SPEC §2, Prefect P§1–2): models, label rules and limits.

An event describes a resource and an action it took or that was taken on it: ``event`` (the
name), a primary ``resource`` (flat string labels with ``prefect.resource.id``), ``related``
resources (each with a ``prefect.resource.role``), a JSON ``payload``, ``occurred``, ``id`` and
``follows``. Limits are parameters (``Limits``), never globals read inside validators.

It also owns the two rules every ingest path applies to every item, so that nothing a client
sends can reach the store and fail a shared commit (docs/ingest.md "Validation"):

* **time range**: every time an event gets (its ``occurred``, the time inside a UUIDv7 id used
  as ``occurred``, OTLP start/end/time/observed times) lies between ``EARLIEST_OCCURRED``
  (2000-01-01T00:00:00Z) and the server's clock plus ``Limits.max_future_seconds``;
* **nesting**: a payload nests at most ``MAX_PAYLOAD_DEPTH`` levels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector.errors import EventTooLarge, InvalidEvent

RESOURCE_ID = "prefect.resource.id"
RESOURCE_ROLE = "prefect.resource.role"
RESOURCE_NAME = "prefect.resource.name"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)

# The earliest time an event may carry. No event Herald stores predates it, while times just
# after the Unix epoch are what unit mistakes produce (seconds or milliseconds sent as OTLP
# nanoseconds), and they would be acknowledged only for retention to delete them unseen.
EARLIEST_OCCURRED = datetime(2000, 1, 1, tzinfo=UTC)
EARLIEST_OCCURRED_US = 946_684_800_000_000
EARLIEST_OCCURRED_TEXT = "2000-01-01T00:00:00Z"
# The latest: the last microsecond a Python ``datetime`` (and so every reader) can hold; only
# reachable with a huge ``max_future_seconds``.
LATEST_OCCURRED_US = 253_402_300_799_999_999

# How deep a payload may nest, the payload object itself being level 1. orjson writes at most
# 254 levels, and an event is served inside two more (the event object, the feed's list), so a
# deeper payload could be stored but never read back; 128 is serde_json's default limit and far
# beyond any real payload.
MAX_PAYLOAD_DEPTH = 128


@dataclass(frozen=True, slots=True)
class Limits:
    """Grammar limits (Prefect's defaults); built from ``LimitsConfig``."""

    max_labels_per_resource: int = 500
    max_related_resources: int = 100
    max_event_name_length: int = 1024
    max_event_bytes: int = 1_500_000
    # How far ahead of the server's clock an event's time may be (client clocks drift).
    max_future_seconds: float = 86_400.0


def describe_us(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC, for messages: also for the times no
    ``datetime`` can hold (a UUIDv7 reaches year 10889), which ``time.gmtime`` can."""
    seconds, micros = divmod(us, 1_000_000)
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
    except (OverflowError, OSError, ValueError):
        return f"{us} microseconds from the Unix epoch"


def occurred_range_us(received_us: int, limits: Limits) -> tuple[int, int]:
    """The inclusive range of times (µs) an event received at ``received_us`` may carry."""
    ahead = received_us + int(limits.max_future_seconds * 1_000_000)
    return EARLIEST_OCCURRED_US, min(ahead, LATEST_OCCURRED_US)


def time_out_of_range(us: int, received_us: int, limits: Limits) -> str:
    """Why ``us`` lies outside ``occurred_range_us`` (the caller names the field first)."""
    if us < EARLIEST_OCCURRED_US:
        return (
            f"{describe_us(us)} is before {EARLIEST_OCCURRED_TEXT}, the earliest time Herald "
            "accepts"
        )
    if received_us + int(limits.max_future_seconds * 1_000_000) > LATEST_OCCURRED_US:
        return f"{describe_us(us)} is after 9999-12-31, the latest time Herald can store"
    return (
        f"{describe_us(us)} is more than {limits.max_future_seconds:g} s ahead of the "
        f"server's clock ({describe_us(received_us)})"
    )


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON-like ``value`` nests more than ``limit`` levels (a container is a level).

    Stops as soon as the answer is known, so the walk never recurses past ``limit`` + 1 levels
    whatever the input's depth.
    """
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    if limit <= 0:
        return True
    return any(
        nested_deeper_than(child, limit - 1)
        for child in children
        if type(child) is dict or type(child) is list
    )


def depth_problem(payload: Any, payload_json: str | None) -> str | None:
    """The reason ``payload`` is too deep, or None. ``payload_json``, when the caller has it,
    makes the common case two C-level counts: a text with few brackets cannot nest deeply."""
    if payload_json is not None:
        if payload_json.count("{") + payload_json.count("[") <= MAX_PAYLOAD_DEPTH:
            return None
    if nested_deeper_than(payload, MAX_PAYLOAD_DEPTH):
        return f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    return None


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
    """Microseconds since the Unix epoch, exact (integer maths); naive values are UTC.

    Never ``astimezone``: converting 9999-12-31T23:59:59-01:00 to UTC would overflow
    ``datetime`` (the range check that follows reports such a time instead). Subtracting two
    aware datetimes works on the wall times and the offsets as ``timedelta``s, which cannot
    overflow here, and ``timedelta // timedelta`` is exact integer maths: one C-level step per
    event on the ingest hot path instead of taking the difference apart in Python.
    """
    if value.utcoffset() is None:
        return (value.replace(tzinfo=None) - _NAIVE_EPOCH) // _ONE_US
    return (value - EPOCH) // _ONE_US


def us_to_datetime(us: int) -> datetime:
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
        if v is None:
            return None
        try:
            return to_utc(v)
        except OverflowError:  # pydantic reports ValueError as a validation error, not this
            raise ValueError("is outside the range of dates once converted to UTC") from None

    def check(self, limits: Limits) -> None:
        """Raise ``InvalidEvent``/``EventTooLarge`` if the event breaks the grammar or a limit.

        Times are checked by the server against its own clock (``occurred_range_us``).
        """
        check_event_parts(self.event, self.resource, self.related, limits)
        problem = depth_problem(self.payload, None)
        if problem:
            raise InvalidEvent(problem)
        try:
            size = len(self.to_json())
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(f"event cannot be written as JSON: {exc}") from None
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

    # Required here (optional on ``Event``), so readers of a stored event need no None checks.
    occurred: datetime = Field(description="when it happened; naive = UTC")
    id: UUID = Field(description="the event's id")
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
