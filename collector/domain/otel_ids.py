"""OpenTelemetry trace and span ids as Herald resource ids (SPEC §4).

The OTLP mapping and the SDK store a trace as the related resource ``otel.trace.<32 hex>``
(role ``trace``) and a span as ``otel.span.<16 hex>`` (roles ``span``, ``parent-span``,
``link``), lower-case hex as OTLP/JSON writes ids. People, though, copy a trace id from a log
line or another tool: bare hex, sometimes upper-case. This module owns both forms and the step
from one to the other — ``related_id_forms`` is what lets a related filter on ``trace=<hex>``
find the trace (``domain/filters.py``) — and the check of a trace id a user typed.
"""

from __future__ import annotations

import re

from collector.errors import InvalidInput

TRACE_PREFIX = "otel.trace."
SPAN_PREFIX = "otel.span."
TRACE_ROLE = "trace"
SPAN_ROLES = frozenset(("span", "parent-span", "link"))

_TRACE_HEX = re.compile(r"[0-9a-fA-F]{32}")
_SPAN_HEX = re.compile(r"[0-9a-fA-F]{16}")
_ZERO_TRACE = "0" * 32


def parse_trace_id(text: str) -> str:
    """A user's trace id → 32 lower-case hex digits; ``InvalidInput`` saying why otherwise.

    ``otel.trace.<hex>`` (the stored resource id) is taken too, so a value copied from an
    event's related resources works as well as one copied from a log line."""
    value = text.strip()
    if value.startswith(TRACE_PREFIX):
        value = value[len(TRACE_PREFIX) :]
    if not _TRACE_HEX.fullmatch(value):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidInput(
            f"trace id must be 32 hexadecimal digits (16 bytes, as OTel writes it), got {shown!r}"
        )
    value = value.lower()
    if value == _ZERO_TRACE:
        raise InvalidInput("trace id must not be all zeros (OTel's invalid trace id)")
    return value


def trace_resource_id(trace_id: str) -> str:
    """The related resource id of a trace (``trace_id``: 32 lower-case hex digits)."""
    return TRACE_PREFIX + trace_id


def related_id_forms(resource_id: str, roles: list[str] | None) -> list[str]:
    """The ids a related filter's ``resource_id`` stands for, given the filter's roles.

    Bare hex of a trace id's length, with the ``trace`` role asked for (or no role), also means
    ``otel.trace.<hex>``; of a span id's length, with a span role (or none), ``otel.span.<hex>``.
    The value itself is always kept, so an event whose related id *is* bare hex still matches
    exactly as Prefect's filter would match it; the added form only widens a filter that would
    otherwise find nothing of the OTel data."""
    forms = [resource_id]
    if _TRACE_HEX.fullmatch(resource_id) and (roles is None or TRACE_ROLE in roles):
        forms.append(TRACE_PREFIX + resource_id.lower())
    elif _SPAN_HEX.fullmatch(resource_id) and (roles is None or not SPAN_ROLES.isdisjoint(roles)):
        forms.append(SPAN_PREFIX + resource_id.lower())
    return forms


__all__ = [
    "SPAN_PREFIX",
    "SPAN_ROLES",
    "TRACE_PREFIX",
    "TRACE_ROLE",
    "parse_trace_id",
    "related_id_forms",
    "trace_resource_id",
]
