"""The evaluator's state — everything about its triggers that must survive a restart — and its
JSON form (``snapshot`` / ``restored``), which the runtime stores with its watermark.

Per trigger node (automation id, trigger path): the open windows of each ``for_each`` key
(``Bucket``), the child firings a compound/sequence trigger collected, the proactive firings
that wait to be resolved (``Fired``), and the fingerprint of the definition the state was
built under. Plus the followers held for their leaders, the ids of recently seen events, and
the events clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from collector.domain.automation_records import Firing
from collector.domain.events import ReceivedEvent, format_time
from collector.errors import StoreError

SNAPSHOT_VERSION = 1

NodeKey = tuple[str, str]  # (automation id, trigger path)
BucketKey = tuple[str, ...]


def event_id_of(event: ReceivedEvent) -> UUID:
    # Stored events always carry an id; the model allows None only for client input.
    if event.id is None:
        raise ValueError("an event without an id cannot be evaluated")
    return event.id


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _parse_event(data: Mapping[str, Any]) -> ReceivedEvent:
    return ReceivedEvent.model_validate(data)


@dataclass(slots=True)
class Bucket:
    """One ``for_each`` key's window of an event trigger."""

    start: datetime
    end: datetime
    count: int
    last_event: ReceivedEvent | None


@dataclass(frozen=True, slots=True)
class Fired:
    """A proactive firing awaiting its expected event (divergence 4)."""

    firing_id: UUID
    start: datetime
    end: datetime


@dataclass(slots=True)
class TriggerState:
    """Everything that must survive a restart; ``fingerprints`` says which trigger definition
    each node's state was built under."""

    buckets: dict[NodeKey, dict[BucketKey, Bucket]] = field(default_factory=dict)
    child_firings: dict[NodeKey, dict[int, Firing]] = field(default_factory=dict)
    fired: dict[NodeKey, dict[BucketKey, Fired]] = field(default_factory=dict)
    fingerprints: dict[NodeKey, str] = field(default_factory=dict)
    held: dict[UUID, ReceivedEvent] = field(default_factory=dict)  # followers by id
    # leader id -> held follower ids; derived from `held`, not persisted
    followers: dict[UUID, list[UUID]] = field(default_factory=dict)
    seen: OrderedDict[UUID, datetime] = field(default_factory=OrderedDict)  # oldest first
    events_clock: datetime | None = None
    events_clock_updated: datetime | None = None


def snapshot(state: TriggerState, seen: list[list[str]] | None) -> dict[str, Any]:
    """``state`` as JSON-able data; ``seen`` (``Evaluator.seen_snapshot``) is included when
    given (it is most of the size, and saved apart)."""
    s = state

    def event(e: ReceivedEvent | None) -> dict[str, Any] | None:
        return e.to_dict() if e is not None else None

    return {
        "version": SNAPSHOT_VERSION,
        "events_clock": format_time(s.events_clock) if s.events_clock else None,
        "events_clock_updated": (
            format_time(s.events_clock_updated) if s.events_clock_updated else None
        ),
        "fingerprints": [
            {"automation_id": a, "path": p, "fingerprint": fp}
            for (a, p), fp in s.fingerprints.items()
        ],
        "buckets": [
            {
                "automation_id": a,
                "path": p,
                "key": list(key),
                "start": format_time(b.start),
                "end": format_time(b.end),
                "count": b.count,
                "last_event": event(b.last_event),
            }
            for (a, p), buckets in s.buckets.items()
            for key, b in buckets.items()
        ],
        "child_firings": [
            {"automation_id": a, "path": p, "child": i, "firing": f.to_dict()}
            for (a, p), store in s.child_firings.items()
            for i, f in store.items()
        ],
        "fired": [
            {
                "automation_id": a,
                "path": p,
                "key": list(key),
                "firing_id": str(r.firing_id),
                "start": format_time(r.start),
                "end": format_time(r.end),
            }
            for (a, p), records in s.fired.items()
            for key, r in records.items()
        ],
        "held": [e.to_dict() for e in s.held.values()],
        **({"seen": seen} if seen is not None else {}),
    }


def restored(snapshot: Mapping[str, Any]) -> TriggerState:
    """The state a ``snapshot`` holds; ``StoreError`` for a snapshot of another version."""
    if snapshot.get("version") != SNAPSHOT_VERSION:
        raise StoreError(
            f"automation state snapshot has version {snapshot.get('version')!r}; "
            f"this Herald reads version {SNAPSHOT_VERSION}"
        )
    s = TriggerState()
    clock, updated = snapshot.get("events_clock"), snapshot.get("events_clock_updated")
    s.events_clock = _parse_time(clock) if clock else None
    s.events_clock_updated = _parse_time(updated) if updated else None
    for r in snapshot.get("fingerprints", ()):
        s.fingerprints[(r["automation_id"], r["path"])] = r["fingerprint"]
    for r in snapshot.get("buckets", ()):
        last = r.get("last_event")
        s.buckets.setdefault((r["automation_id"], r["path"]), {})[tuple(r["key"])] = Bucket(
            _parse_time(r["start"]),
            _parse_time(r["end"]),
            int(r["count"]),
            _parse_event(last) if last is not None else None,
        )
    for r in snapshot.get("child_firings", ()):
        store = s.child_firings.setdefault((r["automation_id"], r["path"]), {})
        store[int(r["child"])] = Firing.from_dict(r["firing"])
    for r in snapshot.get("fired", ()):
        s.fired.setdefault((r["automation_id"], r["path"]), {})[tuple(r["key"])] = Fired(
            UUID(r["firing_id"]), _parse_time(r["start"]), _parse_time(r["end"])
        )
    for data in snapshot.get("held", ()):
        held = _parse_event(data)
        s.held[event_id_of(held)] = held
        if held.follows is not None:
            s.followers.setdefault(held.follows, []).append(event_id_of(held))
    for event_id, at in snapshot.get("seen", ()):
        s.seen[UUID(event_id)] = _parse_time(at)
    return s
