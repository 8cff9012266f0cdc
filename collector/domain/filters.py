"""Prefect's ``EventFilter`` (P§4.1–4.4) as pydantic models, with its in-memory evaluation
``includes(event)`` (live tail, automations, tests). Its twin in SQL, a ``WHERE`` fragment
selecting exactly the same events, belongs to each storage backend
(``collector.store.filter_sql`` for DuckDB); tests/unit/test_filters.py runs both.

Owns the filter JSON (Prefect's field names; unknown keys are errors) and its meaning. Must not
touch a database or read the clock: ``resolve(now)`` fills Prefect's time defaults from an
injected ``now``; an unresolved ``since``/``until`` means "unbounded" on both paths.

Decisions where Prefect's two paths disagree (Herald's two paths must not):

* ``related`` is applied in memory too (Prefect's ``includes()`` ignores it, P§4.3).
* ``prefect.resource.id`` / ``prefect.resource.role`` inside ``labels`` are globs like every
  other label (Prefect's SQL compares them with exact ``IN``; its in-memory path globs).
* The primary resource has no ``prefect.resource.role`` label, so ``any_resource`` labels on the
  role never match it (Prefect's SQL treats its role as ``''``).
* Empty lists in ``id``/``id_prefix``/``prefix``/``name``/… add no constraint (Prefect's
  truthiness checks); an empty *label value list* matches nothing (P§4.2).
* A related ``id`` that is a bare OTel trace id (32 hex) or span id (16 hex) also matches the
  stored ``otel.trace.<hex>`` / ``otel.span.<hex>`` (``domain/otel_ids.py``): a superset of
  Prefect's exact match, so ``--related trace=<hex>`` finds the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE, ReceivedEvent, to_utc
from collector.domain.matching import compile_spec
from collector.domain.otel_ids import related_id_forms
from collector.domain.text_search import (
    MAX_QUERY_LENGTH,
    TextQuery,
    parse_text_query,
    searchable_text,
)
from collector.errors import InvalidFilter

# Prefect's default look-back: the start of today (UTC) minus 180 days (P§4.1).
DEFAULT_LOOKBACK = timedelta(days=180)

LabelSpec = dict[str, str | list[str]]


# --------------------------------------------------------------------------- event access


@dataclass(frozen=True, slots=True)
class EventView:
    """The fields filters read, from a ``ReceivedEvent``/``Event`` or a Prefect-shaped dict."""

    event: str
    occurred: datetime | None
    id: UUID | None
    resource: Mapping[str, str]
    related: Sequence[Mapping[str, str]]
    payload: Any

    @classmethod
    def of(cls, event: EventLike) -> EventView:
        if isinstance(event, EventView):
            return event
        if isinstance(event, Mapping):
            occurred = event.get("occurred")
            if isinstance(occurred, str):
                occurred = datetime.fromisoformat(occurred)
            event_id = event.get("id")
            if event_id is not None and not isinstance(event_id, UUID):
                event_id = UUID(str(event_id))
            return cls(
                event=event["event"],
                occurred=to_utc(occurred) if occurred is not None else None,
                id=event_id,
                resource=event.get("resource") or {},
                related=event.get("related") or [],
                payload=event.get("payload") or {},
            )
        return cls(
            event=event.event,
            occurred=event.occurred,
            id=event.id,
            resource=event.resource,
            related=event.related,
            payload=event.payload,
        )

    @property
    def payload_json(self) -> str:
        if isinstance(self.payload, bytes):
            return self.payload.decode()
        if isinstance(self.payload, str):
            return self.payload
        return orjson.dumps(self.payload).decode()


EventLike = ReceivedEvent | Mapping[str, Any] | EventView


# --------------------------------------------------------------------------- models


class FilterPart(BaseModel):
    """One part of a filter; the storage backends build their SQL per part type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def includes(self, event: EventLike) -> bool:
        """Does ``event`` satisfy this part?"""
        return self._includes(EventView.of(event))

    def excludes(self, event: EventLike) -> bool:
        return not self.includes(event)

    def _includes(self, event: EventView) -> bool:
        raise NotImplementedError


class EventOccurredFilter(FilterPart):
    """``since <= occurred <= until``, both inclusive; ``None`` = unbounded until resolved."""

    since: datetime | None = Field(None, description="earliest occurred time (inclusive)")
    until: datetime | None = Field(None, description="latest occurred time (inclusive)")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else to_utc(v)

    def resolve(self, now: datetime) -> EventOccurredFilter:
        """Fill Prefect's defaults: since = start of today (UTC) − 180 days, until = now."""
        now = to_utc(now)
        since = self.since
        if since is None:
            since = now.replace(hour=0, minute=0, second=0, microsecond=0) - DEFAULT_LOOKBACK
        return EventOccurredFilter(since=since, until=self.until or now)

    def _includes(self, event: EventView) -> bool:
        occurred = event.occurred
        if occurred is None:
            return self.since is None and self.until is None
        if self.since is not None and occurred < self.since:
            return False
        return not (self.until is not None and occurred > self.until)


class EventNameFilter(FilterPart):
    """Event name criteria; each given list is one ANDed criterion."""

    prefix: list[str] | None = Field(None, description="any of these prefixes (OR)")
    exclude_prefix: list[str] | None = Field(None, description="none of these prefixes")
    name: list[str] | None = Field(None, description="exactly one of these names (OR)")
    exclude_name: list[str] | None = Field(None, description="none of these names")

    def _includes(self, event: EventView) -> bool:
        name = event.event
        if self.prefix and not any(name.startswith(p) for p in self.prefix):
            return False
        if self.exclude_prefix and any(name.startswith(p) for p in self.exclude_prefix):
            return False
        if self.name and name not in self.name:
            return False
        return not (self.exclude_name and name in self.exclude_name)


class EventResourceFilter(FilterPart):
    """Criteria on the primary resource. ``distinct`` is applied by the query, not here."""

    id: list[str] | None = Field(None, description="resource id is one of these")
    id_prefix: list[str] | None = Field(None, description="resource id starts with one of these")
    labels: LabelSpec | None = Field(None, description="a ResourceSpecification (P§4.2)")
    distinct: bool = Field(False, description="one event per resource id (the first in order)")

    @cached_property
    def _labels_match(self) -> Callable[[Mapping[str, str]], bool]:
        return compile_spec(self.labels or {})

    def _includes(self, event: EventView) -> bool:
        rid = event.resource.get(RESOURCE_ID, "")
        if self.id and rid not in self.id:
            return False
        if self.id_prefix and not any(rid.startswith(p) for p in self.id_prefix):
            return False
        return not (self.labels and not self._labels_match(event.resource))


class EventRelatedFilter(FilterPart):
    """One related resource must satisfy every given criterion at once (P§4.3)."""

    id: list[str] | None = Field(None, description="related resource id is one of these")
    role: list[str] | None = Field(None, description="related resource role is one of these")
    resources_in_roles: list[tuple[str, str]] | None = Field(
        None, description="(id, role) pairs; any pair matches"
    )
    labels: LabelSpec | None = Field(None, description="a ResourceSpecification (P§4.2)")

    @model_validator(mode="before")
    @classmethod
    def _otel_hex_ids(cls, data: Any) -> Any:
        """A bare trace/span id in hex also means the OTel resource id (``otel_ids``).

        Applied to the filter itself, so the SQL, the in-memory check (live tail) and every
        caller (CLI ``--related trace=<hex>``, the HTTP feed, the web UI) agree; what is stored
        is unchanged. Malformed input is left for the field validation to report."""
        if not isinstance(data, dict):
            return data
        roles = data.get("role")
        if roles is not None and not (
            isinstance(roles, list) and all(isinstance(r, str) for r in roles)
        ):
            return data
        out = dict(data)
        ids = data.get("id")
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            out["id"] = list(dict.fromkeys(f for i in ids for f in related_id_forms(i, roles)))
        labels = data.get("labels")
        if isinstance(labels, dict) and RESOURCE_ID in labels:
            # The id as a label pattern (what the web feed sends): an exact hex value is
            # widened the same way (globs and negations are not hex, so never touched).
            value = labels[RESOURCE_ID]
            values = [value] if isinstance(value, str) else value
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                widened_ids = list(
                    dict.fromkeys(f for v in values for f in related_id_forms(v, roles))
                )
                if len(widened_ids) > len(values):
                    out["labels"] = {**labels, RESOURCE_ID: widened_ids}
        pairs = data.get("resources_in_roles")
        if isinstance(pairs, list):
            widened: list[Any] = []
            for pair in pairs:
                widened.append(pair)
                if (
                    isinstance(pair, list | tuple)
                    and len(pair) == 2
                    and isinstance(pair[0], str)
                    and isinstance(pair[1], str)
                ):
                    widened += [(f, pair[1]) for f in related_id_forms(pair[0], [pair[1]])[1:]]
            out["resources_in_roles"] = widened
        return out

    @cached_property
    def _labels_match(self) -> Callable[[Mapping[str, str]], bool]:
        return compile_spec(self.labels or {})

    @property
    def is_noop(self) -> bool:
        return not (self.id or self.role or self.resources_in_roles or self.labels)

    def _item_matches(self, item: Mapping[str, str]) -> bool:
        rid = item.get(RESOURCE_ID)
        role = item.get(RESOURCE_ROLE)
        if self.id and rid not in self.id:
            return False
        if self.role and role not in self.role:
            return False
        if self.resources_in_roles and (rid, role) not in self.resources_in_roles:
            return False
        return not (self.labels and not self._labels_match(item))

    def _includes(self, event: EventView) -> bool:
        if self.is_noop:
            return True  # an empty related filter does not require related resources
        return any(self._item_matches(item) for item in event.related)


class EventAnyResourceFilter(FilterPart):
    """The primary or any related resource satisfies every given criterion (P§4.3)."""

    id: list[str] | None = Field(None, description="resource id is one of these")
    id_prefix: list[str] | None = Field(None, description="resource id starts with one of these")
    labels: LabelSpec | None = Field(None, description="a ResourceSpecification (P§4.2)")

    @cached_property
    def _labels_match(self) -> Callable[[Mapping[str, str]], bool]:
        return compile_spec(self.labels or {})

    @property
    def is_noop(self) -> bool:
        return not (self.id or self.id_prefix or self.labels)

    def _resource_matches(self, labels: Mapping[str, str]) -> bool:
        rid = labels.get(RESOURCE_ID, "")
        if self.id and rid not in self.id:
            return False
        if self.id_prefix and not any(rid.startswith(p) for p in self.id_prefix):
            return False
        return not (self.labels and not self._labels_match(labels))

    def _includes(self, event: EventView) -> bool:
        if self.is_noop:
            return True
        if self._resource_matches(event.resource):
            return True
        return any(self._resource_matches(item) for item in event.related)


class EventIDFilter(FilterPart):
    """The event id is one of these."""

    id: list[UUID] | None = Field(None, description="event ids (OR)")

    def _includes(self, event: EventView) -> bool:
        return not (self.id and event.id not in self.id)


class EventTextFilter(FilterPart):
    """Prefect's text search (P§4.4) over name, label values and payload JSON."""

    query: str = Field(max_length=MAX_QUERY_LENGTH, description="text search query")

    @cached_property
    def parsed(self) -> TextQuery:
        return parse_text_query(self.query)

    def _includes(self, event: EventView) -> bool:
        parsed = self.parsed
        if parsed.is_empty:
            return True
        text = searchable_text(event.event, event.resource, event.related, event.payload_json)
        return parsed.matches(text)


class EventOrder(StrEnum):
    """Feed order by ``occurred`` (Herald breaks ties by ``id`` the same way)."""

    ASC = "ASC"
    DESC = "DESC"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class EventFilter(FilterPart):
    """Prefect's ``EventFilter``: every part is ANDed; lists of related / any-resource filters
    are ANDed too (each may be satisfied by a different resource)."""

    occurred: EventOccurredFilter = Field(
        default_factory=EventOccurredFilter, description="when the events occurred"
    )
    event: EventNameFilter | None = Field(None, description="the event name")
    resource: EventResourceFilter | None = Field(None, description="the primary resource")
    related: EventRelatedFilter | list[EventRelatedFilter] | None = Field(
        None, description="related resources (one object or a list, ANDed)"
    )
    any_resource: EventAnyResourceFilter | list[EventAnyResourceFilter] | None = Field(
        None, description="the primary or any related resource (one object or a list, ANDed)"
    )
    id: EventIDFilter = Field(default_factory=EventIDFilter, description="the event ids")
    text: EventTextFilter | None = Field(None, description="text search")
    order: EventOrder = Field(EventOrder.DESC, description="ASC or DESC by occurred")

    @field_validator("order", mode="before")
    @classmethod
    def _order(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @property
    def parts(self) -> list[FilterPart]:
        """Every sub-filter, lists flattened (they are ANDed)."""
        # Cheapest and most selective first (ids, names, the resource id column), full-text
        # search last: the SQL is ANDed in this order, and so is ``includes()``.
        out: list[FilterPart] = [self.occurred, self.id]
        if self.event is not None:
            out.append(self.event)
        if self.resource is not None:
            out.append(self.resource)
        out += _as_list(self.related)
        out += _as_list(self.any_resource)
        if self.text is not None:
            out.append(self.text)
        return out

    @property
    def distinct(self) -> bool:
        return bool(self.resource and self.resource.distinct)

    @property
    def logical_limit(self) -> int | None:
        """The most rows this filter can return (``len(id)`` when ids are given), else None."""
        return len(self.id.id) if self.id.id else None

    def resolve(self, now: datetime) -> EventFilter:
        """This filter with Prefect's time defaults filled in from ``now`` (P§4.1)."""
        return self.model_copy(update={"occurred": self.occurred.resolve(now)})

    def _includes(self, event: EventView) -> bool:
        return all(part._includes(event) for part in self.parts)

    def to_json(self) -> dict[str, Any]:
        """Prefect-shaped JSON (unset parts left out); ``parse_filter`` reads it back."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def parse_filter(data: Any) -> EventFilter:
    """Validate Prefect's EventFilter JSON (a dict, JSON text or None = match everything);
    raises ``InvalidFilter`` naming the field and the rule."""
    if data is None:
        return EventFilter()
    try:
        if isinstance(data, str | bytes):
            return EventFilter.model_validate_json(data)
        return EventFilter.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "filter"
        if first["type"] == "extra_forbidden":
            raise InvalidFilter(f"filter.{loc}: unknown field") from None
        raise InvalidFilter(f"filter.{loc}: {first['msg']}") from None


__all__ = [
    "DEFAULT_LOOKBACK",
    "EventAnyResourceFilter",
    "EventFilter",
    "EventIDFilter",
    "EventNameFilter",
    "EventOccurredFilter",
    "EventOrder",
    "EventRelatedFilter",
    "EventResourceFilter",
    "EventTextFilter",
    "EventView",
    "FilterPart",
    "parse_filter",
]
