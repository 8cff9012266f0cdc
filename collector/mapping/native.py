"""Native events (Prefect's JSON event shape) → ``EventColumns``.

One function serves ``POST /api/events``, the gRPC ``Emit`` and the SDK: a JSON list of events
is validated item by item (per-item errors; the valid ones are kept), ``id`` defaults to a new
UUIDv7 and ``occurred`` to ``received`` (or to the time inside a given UUIDv7 id); naive times
are UTC. This is a hot path, so it checks
the grammar by hand (``check_event_parts``) instead of building a pydantic model per event, and
a request body first takes a faster way still (``json_body_to_columns``: msgspec decodes it into
typed structs) that hands any item it does not fully accept to that exact path.

Whatever goes wrong with one item is that item's error, never the batch's: the time range and
nesting rules (``collector/domain/events.py``) keep items the store or a reader could not take
out of the batch, and an unexpected failure mapping one item is logged and reported for that
item alone, so the rest of the batch is still stored.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import (
    EARLIEST_OCCURRED_US,
    MAX_PAYLOAD_DEPTH,
    RESOURCE_ID,
    RESOURCE_ROLE,
    Limits,
    check_event_parts,
    datetime_to_us,
    depth_problem,
    occurred_range_us,
    time_out_of_range,
)
from collector.domain.ids import uuid7_str, uuid7_strs
from collector.errors import EventTooLarge, InvalidEvent, InvalidInput

log = logging.getLogger(__name__)

_dumps = orjson.dumps

# The per-item message for a failure nobody foresaw; the details go to the server log.
UNEXPECTED = "this event could not be mapped (an internal error, logged by the server)"


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# msgspec searches with the pattern, and "$" would also match before a final newline.
_CanonicalUuid = Annotated[str, msgspec.Meta(pattern=rf"\A{_CANONICAL_UUID.pattern}\Z")]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The shape of a plain, well-formed event, for the fast path (``json_body_to_columns``).

    Typed so that msgspec checks in C what ``check_event_parts`` and ``_uuid`` check in Python
    (labels are string to string, related is a list of them, ids are canonical UUIDs; other
    UUID spellings go the exact path, which normalizes them). Unknown fields are refused
    rather than skipped: msgspec skips a value without the checks orjson applies (``1e400``,
    invalid UTF-8), and such a body must keep the answer the exact path gives it. Decoded
    payload values are orjson's too, except integers beyond 64 bits (orjson: a float, msgspec:
    an int), which orjson then refuses to write, so that body goes the exact path.
    """

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] | None = None
    payload: dict[str, Any] | None = None
    id: _CanonicalUuid | None = None
    occurred: str | None = None
    follows: _CanonicalUuid | None = None


# Immutable once built (like a compiled regex): decodes a body straight into ``_WireEvent``s.
_FAST_DECODER = msgspec.json.Decoder(list[_WireEvent])


class _NotFast(Exception):
    """This body needs the exact path (some item is invalid, or unusual)."""


def json_body_to_columns(
    body: bytes, received_us: int, limits: Limits
) -> tuple[EventColumns, list[tuple[int, str]]]:
    """Decode and validate a request body (a JSON array of events): the valid events as
    columns, ``(index, reason)`` for the rest; ``InvalidInput`` if the body is not such an array.

    The fast path: msgspec decodes the body straight into typed structs (label types checked in
    C) and the remaining rules of ``_one`` are checked inline. A body msgspec refuses, and any
    item that breaks a rule (or anything unforeseen), goes the exact way instead:
    ``parse_events_json`` (decoded once, at the first such item) and ``_one``, which write every
    error message. So the result is always exactly ``json_events_to_columns(parse_events_json(
    body))``'s (``tests/unit/test_native_fast_path.py`` compares the two).
    """
    try:
        events = _FAST_DECODER.decode(body)
    except Exception:  # a DecodeError/ValidationError, or a RecursionError on deep nesting
        return json_events_to_columns(parse_events_json(body), received_us, limits)
    cols = EventColumns()
    errors: list[tuple[int, str]] = []
    items: list[Any] | None = None  # the exact path's decoding, made once if needed
    logged = False
    new_ids: list[str] = []
    _, latest_us = occurred_range_us(received_us, limits)
    max_name = limits.max_event_name_length
    max_labels = limits.max_labels_per_resource
    max_related = limits.max_related_resources
    max_bytes = limits.max_event_bytes
    append = cols.append_json
    for index, ev in enumerate(events):
        # Every rule of ``_one``; breaking one means "take the exact path", never an error of
        # its own. Nothing is appended before the last check.
        try:
            name = ev.event
            resource = ev.resource
            rid = resource.get(RESOURCE_ID)
            if not name or len(name) > max_name or not rid or len(resource) > max_labels:
                raise _NotFast
            related = ev.related
            if related:
                if len(related) > max_related:
                    raise _NotFast
                for labels in related:
                    if (
                        not labels.get(RESOURCE_ID)
                        or not labels.get(RESOURCE_ROLE)
                        or len(labels) > max_labels
                    ):
                        raise _NotFast
                related_json = _dumps(related).decode()
            else:
                related_json = "[]"
            payload = ev.payload
            if payload is None:
                payload_json = "{}"
            else:
                payload_json = _dumps(payload).decode()
                # Nesting past the limit takes more brackets than a typical payload has
                # characters.
                if len(payload_json) > MAX_PAYLOAD_DEPTH and depth_problem(payload, payload_json):
                    raise _NotFast
            given_id = ev.id
            raw_occurred = ev.occurred
            if raw_occurred is None and given_id is not None and given_id[14] == "7":
                occurred = int(given_id[:8] + given_id[9:13], 16) * 1000
            elif raw_occurred is None:
                occurred = received_us
            else:
                occurred = _occurred_us(raw_occurred, received_us)
            if not EARLIEST_OCCURRED_US <= occurred <= latest_us:
                raise _NotFast
            resource_json = _dumps(resource).decode()
            size = len(resource_json) + len(related_json) + len(payload_json) + len(name) + 200
            if size > max_bytes:
                raise _NotFast
            if given_id is None:
                if not new_ids:  # ids for the events sent without one, drawn a chunk at a time
                    new_ids = uuid7_strs(min(256, len(events) - index))
                given_id = new_ids.pop()
            append(
                given_id,
                occurred,
                name,
                rid,
                resource_json,
                related_json,
                payload_json,
                ev.follows,
            )
            continue
        except Exception:  # _NotFast, an orjson or time error, or a bug: the exact path
            pass  # reports (and logs) whatever is wrong with this item
        if items is None:
            items = parse_events_json(body)  # (orjson's verdict on the body, if it differs)
        logged = _exact_item(
            items[index], index, cols, errors, received_us, latest_us, limits, logged
        )
    return cols, errors


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
        raise InvalidEvent(f"occurred: {value[:80]!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return datetime_to_us(when)


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
        raise InvalidEvent(f"{field}: {value[:80]!r} is not a UUID") from None


def _one(item: Any, cols: EventColumns, received_us: int, latest_us: int, limits: Limits) -> None:
    if type(item) is not dict:
        raise InvalidEvent("must be a JSON object")
    # Decoded JSON of any shape until check_event_parts has validated it.
    name: Any = item.get("event")
    resource: Any = item.get("resource")
    related: Any = item.get("related") or []
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
        if not EARLIEST_OCCURRED_US <= occurred <= latest_us:
            raise InvalidEvent(
                "id: without occurred, a UUIDv7 id's time is the event's time, and "
                f"{time_out_of_range(occurred, received_us, limits)}; send occurred"
            )
    elif raw_occurred is None:
        occurred = received_us
    else:
        occurred = _occurred_us(raw_occurred, received_us)
        if not EARLIEST_OCCURRED_US <= occurred <= latest_us:
            raise InvalidEvent(f"occurred: {time_out_of_range(occurred, received_us, limits)}")
    follows = _uuid(item.get("follows"), "follows")
    # Each part is serialized once: for the size check and for storage. Labels are flat
    # strings (checked above); only the payload can be too deep to write.
    resource_json = _dumps(resource).decode()
    related_json = _dumps(related).decode() if related else "[]"
    try:
        payload_json = _dumps(payload).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(depth_problem(payload, None) or f"payload: {exc}") from None
    problem = depth_problem(payload, payload_json)
    if problem:
        raise InvalidEvent(problem)
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
    _, latest_us = occurred_range_us(received_us, limits)
    logged = False
    for index, item in enumerate(items):
        logged = _exact_item(item, index, cols, errors, received_us, latest_us, limits, logged)
    return cols, errors


def _exact_item(
    item: Any,
    index: int,
    cols: EventColumns,
    errors: list[tuple[int, str]],
    received_us: int,
    latest_us: int,
    limits: Limits,
    logged: bool,
) -> bool:
    """Map one item onto ``cols``, or its reason onto ``errors``; returns ``logged``, whether
    the batch has logged a traceback yet."""
    before = len(cols)
    try:
        _one(item, cols, received_us, latest_us, limits)
    except (InvalidEvent, EventTooLarge) as exc:
        errors.append((index, str(exc)))
    except Exception:
        # A bug, not bad input: this item is reported, the batch goes on, and the first
        # traceback of the batch is logged (one hostile batch must not flood the log).
        if not logged:
            log.exception("could not map event %d of a batch", index)
            logged = True
        _truncate(cols, before)
        errors.append((index, UNEXPECTED))
    return logged


def _truncate(cols: EventColumns, n: int) -> None:
    """Drop anything a failed item appended past the first ``n`` events (all or nothing)."""
    if len(cols) > n:
        for column in (
            cols.ids,
            cols.occurred_us,
            cols.names,
            cols.resource_ids,
            cols.resources,
            cols.related,
            cols.payloads,
            cols.follows,
        ):
            del column[n:]
