"""Native events (Prefect's JSON event shape) → ``EventColumns``.

One function serves ``POST /api/events``, the gRPC ``Emit`` and the SDK: a JSON list of events
is validated item by item (per-item errors; the valid ones are kept), ``id`` defaults to a new
UUIDv7 and ``occurred`` to ``received``; naive times are UTC. This is a hot path, so it checks
the grammar by hand (``check_event_parts``) instead of building a pydantic model per event.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import Limits, check_event_parts, datetime_to_us
from collector.domain.ids import uuid7_str
from collector.errors import EventTooLarge, InvalidEvent, InvalidInput


def parse_events_json(body: bytes) -> list[Any]:
    """Decode a request body that must be a JSON array of events."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise InvalidInput("body must be a JSON array of events")
    return data


def _occurred_us(value: Any, received_us: int) -> int:
    if value is None:
        return received_us
    if not isinstance(value, str):
        raise InvalidEvent("occurred: must be an ISO 8601 date-time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"occurred: {value!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return datetime_to_us(when)


def _uuid(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidEvent(f"{field}: {value!r} is not a UUID") from None


def _one(item: Any, cols: EventColumns, received_us: int, limits: Limits) -> None:
    if not isinstance(item, dict):
        raise InvalidEvent("must be a JSON object")
    name = item.get("event")
    resource = item.get("resource")
    related = item.get("related") or []
    check_event_parts(name, resource, related, limits)
    payload = item.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise InvalidEvent("payload: must be a JSON object")
    occurred = _occurred_us(item.get("occurred"), received_us)
    event_id = _uuid(item.get("id"), "id") or uuid7_str()
    follows = _uuid(item.get("follows"), "follows")
    payload_json = orjson.dumps(payload).decode()
    # The whole event's JSON size; labels and payload dominate, so this is close to exact.
    size = len(payload_json) + len(orjson.dumps(resource)) + len(orjson.dumps(related)) + len(name)
    if size + 200 > limits.max_event_bytes:
        raise EventTooLarge(
            f"event is about {size} bytes of JSON; at most {limits.max_event_bytes} are allowed"
        )
    cols.append(event_id, occurred, name, resource, related, payload_json, follows)


def json_events_to_columns(
    items: list[Any], received_us: int, limits: Limits
) -> tuple[EventColumns, list[tuple[int, str]]]:
    """Validate ``items``; return the valid ones as columns and ``(index, reason)`` for the rest."""
    cols = EventColumns()
    errors: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        try:
            _one(item, cols, received_us, limits)
        except (InvalidEvent, EventTooLarge) as exc:
            errors.append((index, str(exc)))
    return cols, errors

