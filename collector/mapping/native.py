"""Native events (Prefect's JSON event shape) → ``EventColumns``.

One function serves ``POST /api/events``, the gRPC ``Emit`` and the SDK: a JSON list of events
is validated item by item (per-item errors; the valid ones are kept), ``id`` defaults to a new
UUIDv7 and ``occurred`` to ``received`` (or to the time inside a given UUIDv7 id); naive times
are UTC. This is a hot path, so it checks
the grammar by hand (``check_event_parts``) instead of building a pydantic model per event.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import RESOURCE_ID, Limits, check_event_parts, datetime_to_us
from collector.domain.ids import uuid7_str
from collector.errors import EventTooLarge, InvalidEvent, InvalidInput

_dumps = orjson.dumps


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


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is str and len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        return value  # the common, already-canonical form: skip building a UUID object
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidEvent(f"{field}: {value!r} is not a UUID") from None


def _one(item: Any, cols: EventColumns, received_us: int, limits: Limits) -> None:
    if type(item) is not dict:
        raise InvalidEvent("must be a JSON object")
    name = item.get("event")
    resource = item.get("resource")
    related = item.get("related") or []
    check_event_parts(name, resource, related, limits)
    payload = item.get("payload")
    if payload is None:
        payload = {}
    elif type(payload) is not dict:
        raise InvalidEvent("payload: must be a JSON object")
    given_id = _uuid(item.get("id"), "id")
    event_id = given_id or uuid7_str()
    raw_occurred = item.get("occurred")
    if raw_occurred is None and given_id is not None and given_id[14] == "7":
        # A UUIDv7 id carries the time it was made: use it as `occurred`, so re-sending the
        # same id-only event maps to the same (id, occurred) and dedupes (docs/ingest.md).
        occurred = int(given_id[:8] + given_id[9:13], 16) * 1000
    else:
        occurred = _occurred_us(raw_occurred, received_us)
    follows = _uuid(item.get("follows"), "follows")
    # Each part is serialized once: for the size check and for storage.
    resource_json = _dumps(resource).decode()
    related_json = _dumps(related).decode() if related else "[]"
    payload_json = _dumps(payload).decode()
    size = len(resource_json) + len(related_json) + len(payload_json) + len(name) + 200
    if size > limits.max_event_bytes:
        raise EventTooLarge(
            f"event is about {size} bytes of JSON; at most {limits.max_event_bytes} are allowed"
        )
    cols.append_json(
        event_id,
        occurred,
        name,
        resource[RESOURCE_ID],
        resource_json,
        related_json,
        payload_json,
        follows,
    )


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
