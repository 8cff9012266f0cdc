"""What the OTLP trace and log mappers share (SPEC §4).

This module owns: decoding ``AnyValue``/``KeyValue`` into Python values (typed, for payloads)
and into label strings (for resources), the OTel Resource → Herald primary resource rule
(``otel.service.[<namespace>.]<name>``), the scope related resource, cutting label sets to the
limit, microseconds → ISO 8601, id checks, the deterministic event ids, and ``MappingResult``,
the value every mapper returns. OTLP nanoseconds become microseconds as ``ns // 1000`` in the
callers: integer maths, never floats, which would lose microseconds at today's epoch values.

Everything here is on the ingest hot path: it is written for few Python-level calls per
attribute, and the per-resource and per-scope work is done once by the callers.
"""

from __future__ import annotations

import logging
import time
from base64 import b64encode
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import (
    MAX_PAYLOAD_DEPTH,
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
)
from collector.errors import HeraldError, InvalidEvent

log = logging.getLogger(__name__)

# How many human-readable reasons a MappingResult keeps (OTLP's partial_success has room for
# one message; a few examples are more useful than thousands of lines).
MAX_REASONS = 5

UNKNOWN_SERVICE = "unknown_service"  # the OTel SDK default when service.name is missing
TRUNCATED = "herald.truncated"  # payload key recording what was cut to fit the limits

# The per-item reason for a failure nobody foresaw; the details go to the server log.
UNEXPECTED = "could not be mapped (an internal error, logged by the server)"
TOO_DEEP = f"a value is nested deeper than {MAX_PAYLOAD_DEPTH} levels"

ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)

# AnyValue oneof cases whose Python value is already the JSON value.
_SCALARS = frozenset(("int_value", "bool_value", "double_value"))


@dataclass(slots=True)
class MappingResult:
    """Events mapped from one OTLP request, plus what was left out and why.

    ``rejected`` counts OTLP items (spans, log records) that were not stored, as OTLP's
    ``partial_success.rejected_*`` does. ``reasons`` keeps the first ``MAX_REASONS`` messages,
    which may also be warnings about parts dropped from an item that was stored (a span event
    with an over-long name, say); ``problems`` counts all of them.
    """

    columns: EventColumns
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    problems: int = 0
    logged: bool = False  # an unexpected failure's traceback was logged for this request

    def reject(self, reason: str) -> None:
        """Record that one OTLP item was not stored."""
        self.rejected += 1
        self.note(reason)

    def note(self, reason: str) -> None:
        """Record a problem without counting a rejected item (OTLP calls this a warning)."""
        self.problems += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def fail(self, where: str, exc: BaseException, *, items: int = 1, kept: str = "") -> None:
        """Record that mapping ``items`` OTLP items (0: a part of a stored item) raised ``exc``.

        Herald's own errors (a value nested too deep) carry their reason; anything else is a
        bug, reported without its details (no class names reach the sender) and logged with its
        traceback once per request, so one hostile request cannot flood the log.
        """
        if isinstance(exc, HeraldError):
            reason = str(exc)
        else:
            reason = UNEXPECTED
            if not self.logged:
                self.logged = True
                log.error("could not map %s of an OTLP request", where, exc_info=exc)
        message = f"{where}: {reason}" + (f"; {kept}" if kept else "")
        self.rejected += items
        self.note(message)

    def error_message(self) -> str:
        """One line for ``partial_success.error_message``; empty when nothing went wrong."""
        text = "; ".join(self.reasons)
        if self.problems > len(self.reasons):
            text += f"; and {self.problems - len(self.reasons)} more"
        return text


# --- values --------------------------------------------------------------------------------


def any_value(v: Any, level: int = 2) -> Any:
    """An ``AnyValue`` as typed JSON: ints stay ints, arrays lists, kvlists dicts, bytes base64.

    An empty ``AnyValue`` is ``None``; so is ``string_value_strindex``, which only means
    something next to a profiles dictionary. ``level`` is how deep the value sits in its
    payload (attribute values and log bodies sit at level 2, inside the payload object); an
    array or kvlist deeper than ``MAX_PAYLOAD_DEPTH`` raises ``InvalidEvent``. (Protobuf's own
    recursion limit already refuses a request nested about 50 AnyValues deep; this keeps the
    rule the same as for native events whatever the decoder.)
    """
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which in _SCALARS:
        return getattr(v, which)
    if which == "array_value":
        if level > MAX_PAYLOAD_DEPTH:
            raise InvalidEvent(TOO_DEEP)
        return [any_value(x, level + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        if level > MAX_PAYLOAD_DEPTH:
            raise InvalidEvent(TOO_DEEP)
        return {x.key: any_value(x.value, level + 1) for x in v.kvlist_value.values}
    if which == "bytes_value":
        return b64encode(v.bytes_value).decode()
    return None


def attributes_to_values(kvs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` → ``{key: typed value}``; a repeated key keeps its last value."""
    # A non-empty string_value can only mean the oneof holds a string, so most attributes
    # need no WhichOneof; a comprehension keeps the per-attribute cost to three field reads.
    return {kv.key: s if (s := (v := kv.value).string_value) else any_value(v) for kv in kvs}


def label_value(value: Any) -> str:
    """A typed value as a label: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def attributes_to_labels(kvs: Any) -> dict[str, str]:
    """Repeated ``KeyValue`` → string labels (non-string values JSON-encoded)."""
    return {kv.key: s if (s := (v := kv.value).string_value) else _label(v) for kv in kvs}


def _label(v: Any) -> str:
    """The label of a non-string (or empty-string) ``AnyValue``; ints and bools fast."""
    which = v.WhichOneof("value")
    if which == "int_value":
        return str(v.int_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "string_value":
        return ""
    return label_value(any_value(v))


def merge_labels(
    fixed: dict[str, str], extra: dict[str, str], limit: int
) -> tuple[dict[str, str], int]:
    """``fixed`` labels, then ``extra`` ones, at most ``limit`` in all.

    Herald's own labels (``fixed``) come first and win over an attribute of the same key; the
    attributes past the limit, and any that a fixed label shadows, are not kept. Returns the
    labels and how many attributes were left out. ``fixed`` itself is never cut, so a resource
    stays valid whatever the limit.
    """
    n = len(fixed) + len(extra)
    if n <= limit:
        merged = fixed | extra
        if len(merged) == n:  # the common case: no shadowing, nothing to cut
            return merged, 0
    out = dict(fixed)
    room = limit - len(out)
    dropped = 0
    for key, value in extra.items():
        if key in fixed:
            dropped += 1
        elif room > 0:
            out[key] = value
            room -= 1
        else:
            dropped += 1
    return out, dropped


# --- resources -----------------------------------------------------------------------------


def resource_labels(resource: Any, max_labels: int) -> tuple[dict[str, str], int]:
    """The primary resource for an OTel ``Resource``, and how many of its labels were cut.

    id ``otel.service.<service.name>`` (``otel.service.<service.namespace>.<service.name>``
    when the namespace is set), name = ``service.name`` (``unknown_service`` when missing or
    empty), then every resource attribute as a label.
    """
    attrs = attributes_to_labels(resource.attributes)
    name = attrs.get("service.name") or UNKNOWN_SERVICE
    namespace = attrs.get("service.namespace")
    rid = f"otel.service.{namespace}.{name}" if namespace else f"otel.service.{name}"
    return merge_labels({RESOURCE_ID: rid, RESOURCE_NAME: name}, attrs, max_labels)


def scope_related(scope: Any) -> dict[str, str] | None:
    """The ``scope`` related resource of an ``InstrumentationScope``; None when it has no name."""
    name = scope.name
    if not name:
        return None
    item = {RESOURCE_ID: f"otel.scope.{name}", RESOURCE_ROLE: "scope"}
    if scope.version:
        item["otel.scope.version"] = scope.version
    return item


def identity_digest(message: Any) -> bytes:
    """16 bytes standing for a Resource or scope in derived ids (fixed length, so unambiguous)."""
    return blake2b(message.SerializeToString(deterministic=True), digest_size=16).digest()


# --- times and ids -------------------------------------------------------------------------

_SECOND_PREFIX: dict[int, str] = {}


def iso_from_us(us: int) -> str:
    """Microseconds since the epoch → ``2026-11-24T10:00:00.000000Z`` (Prefect's form).

    ``strftime`` is the slow part, and the spans of one request share a few seconds, so the
    ``YYYY-MM-DDTHH:MM:SS`` prefix is cached per second (bounded; a plain dict is safe under
    the GIL).
    """
    seconds, micros = divmod(us, 1_000_000)
    prefix = _SECOND_PREFIX.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIX) >= 4096:
            _SECOND_PREFIX.clear()
        prefix = _SECOND_PREFIX[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{micros:06d}Z"


def derived_id(*parts: bytes) -> str:
    """Exactly ``collector.domain.ids.derived_uuid(*parts)`` (a test holds them equal).

    Formatting the hex digest directly is ~2× faster than going through ``uuid.UUID``, and
    this runs once per event on the ingest hot path. The version nibble becomes 8 and the
    variant bits 10, as in ``derived_uuid``.
    """
    h = blake2b(b"\x1f".join(parts), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# hex digit → the same digit with its top two bits set to 10 (the RFC 9562 variant)
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
