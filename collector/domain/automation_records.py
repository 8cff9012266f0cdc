"""Records the automations area shares: a ``Firing`` (what the evaluator derives), the
``ActionRun`` rows a firing starts, a ``StoredAutomation`` with its timestamps, and what the
runtime stores and restores (``NewFiring``, ``EvaluatorState``, ``Unfinished``).

They live here, below both the automations runtime and the store, so that each can use them
without importing the other. Plain data with their JSON forms; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from collector.domain.automations import Automation
from collector.domain.events import ReceivedEvent, format_time

FiringKind = Literal["triggered", "resolved"]
# (received µs, occurred µs, id): the order events are evaluated and replayed in.
EventKey = tuple[int, int, str]


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


# --------------------------------------------------------------------------------------------
# Firings


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger fired (``triggered``) or, for a proactive trigger, recovered (``resolved``).

    ``occurred`` is event time: the triggering event's ``occurred`` for reactive firings, the
    window's end for proactive ones, the last child's for composite ones. ``firings`` holds the
    child firings of a compound/sequence trigger; ``resolves`` the id of the firing a
    ``resolved`` one ends.
    """

    id: UUID
    automation_id: UUID
    trigger_id: UUID
    trigger_path: str
    kind: FiringKind
    occurred: datetime
    bucket_key: tuple[str, ...] = ()
    triggering_labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    triggering_event: ReceivedEvent | None = field(default=None, hash=False)
    firings: tuple[Firing, ...] = ()
    resolves: UUID | None = None

    def walk(self) -> Iterator[Firing]:
        """This firing, then every nested child firing, depth first."""
        yield self
        for child in self.firings:
            yield from child.walk()

    @property
    def events(self) -> list[ReceivedEvent]:
        """Every triggering event across the nested firings, once each, by ``occurred``."""
        seen: dict[UUID | None, ReceivedEvent] = {}
        for f in self.walk():
            if f.triggering_event is not None:
                seen.setdefault(f.triggering_event.id, f.triggering_event)
        return sorted(seen.values(), key=lambda e: e.occurred)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (templates' ``firing``, snapshots, the store)."""
        return {
            "id": str(self.id),
            "automation_id": str(self.automation_id),
            "trigger_id": str(self.trigger_id),
            "trigger_path": self.trigger_path,
            "kind": self.kind,
            "occurred": format_time(self.occurred),
            "bucket_key": list(self.bucket_key),
            "triggering_labels": dict(self.triggering_labels),
            "triggering_event": (
                self.triggering_event.to_dict() if self.triggering_event is not None else None
            ),
            "firings": [f.to_dict() for f in self.firings],
            "resolves": str(self.resolves) if self.resolves else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Firing:
        event = data.get("triggering_event")
        return cls(
            id=UUID(data["id"]),
            automation_id=UUID(data["automation_id"]),
            trigger_id=UUID(data["trigger_id"]),
            trigger_path=data["trigger_path"],
            kind=data["kind"],
            occurred=datetime.fromisoformat(data["occurred"]),
            bucket_key=tuple(data.get("bucket_key", ())),
            triggering_labels=dict(data.get("triggering_labels", {})),
            triggering_event=ReceivedEvent.model_validate(event) if event is not None else None,
            firings=tuple(cls.from_dict(f) for f in data.get("firings", ())),
            resolves=UUID(data["resolves"]) if data.get("resolves") else None,
        )


# --------------------------------------------------------------------------------------------
# Automations and action runs as stored


@dataclass(frozen=True, slots=True)
class StoredAutomation:
    """An automation as stored, with its ORM-like timestamps. ``automation`` holds the real
    secret values (for the runner); ``public`` is the automation JSON with markers in their
    place (what the table, read APIs and events show)."""

    automation: Automation
    created: datetime
    updated: datetime
    public: dict[str, Any] | None = None

    def to_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        """Prefect's read shape: the automation JSON plus ``created`` and ``updated``; its
        secrets as markers unless ``reveal`` (admins only)."""
        body = (
            self.automation.model_dump(mode="json")
            if reveal or self.public is None
            else self.public
        )
        return {
            **body,
            "created": format_time(self.created),
            "updated": format_time(self.updated),
        }


@dataclass(slots=True)
class ActionRun:
    """One action a firing runs (``action_runs`` row)."""

    id: UUID
    firing_id: UUID
    automation_id: UUID
    action_list: str  # actions | actions_on_trigger | actions_on_resolve
    action_index: int
    action_type: str
    phase: str  # trigger | resolve
    # triggered (waiting or running) | executed | failed | cancelled | skipped
    status: str = "triggered"
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    response_status: int | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "firing_id": str(self.firing_id),
            "automation_id": str(self.automation_id),
            "action_list": self.action_list,
            "action_index": self.action_index,
            "action_type": self.action_type,
            "phase": self.phase,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "response_status": self.response_status,
            "created": _time(self.created),
            "started": _time(self.started),
            "finished": _time(self.finished),
        }


@dataclass(frozen=True, slots=True)
class NewFiring:
    """A firing to record, with the id of the event that announces it and its action runs."""

    firing: Firing
    event_id: UUID
    runs: list[ActionRun]


@dataclass(frozen=True, slots=True)
class EvaluatorState:
    """The evaluator's state as stored: its snapshot without the seen-ids (``core``, JSON),
    the watermark it was taken at, and the seen-ids (a JSON list; saved less often)."""

    core: bytes
    watermark: EventKey | None
    seen: bytes | None = None  # None when saving: keep the stored seen-ids

    @property
    def snapshot(self) -> dict[str, Any]:
        """The evaluator snapshot (``Evaluator.restore`` takes it)."""
        out: dict[str, Any] = orjson.loads(self.core)
        out["seen"] = orjson.loads(self.seen) if self.seen else []
        return out


@dataclass(slots=True)
class Unfinished:
    """A firing whose announcement or actions did not complete (the process stopped)."""

    firing: Firing
    event_id: UUID
    announced: bool
    runs: list[ActionRun]
