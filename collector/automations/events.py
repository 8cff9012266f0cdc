"""Events about automations (SPEC §7, Prefect P§6.2, §6.5 with the ``herald.`` prefix) and the
loop guard that keeps automations from re-triggering themselves without bound.

This module owns the *shape* of every event Herald emits about an automation —
``herald.automation.created|updated|deleted``, ``herald.automation.triggered|resolved`` and
``herald.automation.action.triggered|executed|failed`` — their deterministic ids, and the
``Cause`` carried on them. It builds JSON dicts in Prefect's event shape; storing them is the
runner's job.

Loop guard (documented in docs/automations.md). Every event an automation causes carries its
*cause*: the chain of automations that led to it and its depth. On the
``herald.automation.*`` events the cause sits on the primary resource
(``herald.automation.<id>``); on an event an ``emit-event`` action emits, on a related resource
``herald.automation.<id>`` with role ``automation``. Labels: ``herald.automation.depth``
(``"1"`` for an event caused by a firing on an ordinary event, +1 per automation after that)
and ``herald.automation.chain`` (the automation ids, space-separated, oldest first). Then:

1. an event whose chain contains automation A is never evaluated against A, so A cannot
   trigger itself, directly or through other automations;
2. an event deeper than ``MAX_DEPTH`` is stored but evaluated against no automation at all.

Since rule 1 keeps every automation at most once in a chain, chains are bounded by the number of
automations anyway; rule 2 is a cheap cap on long fan-out cascades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from collector.domain.automation_records import Firing
from collector.domain.automations import Automation
from collector.domain.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    ReceivedEvent,
    format_time,
)
from collector.domain.ids import derived_uuid
from collector.domain.triggers import EventTrigger

AUTOMATION_PREFIX = "herald.automation."
EVENT_PREFIX = "herald.event."
DEPTH_LABEL = "herald.automation.depth"
CHAIN_LABEL = "herald.automation.chain"
CAUSE_ROLE = "automation"
MAX_DEPTH = 8
# Prefect's TIGHT_TIMING: `follows` is set only between events this close in time.
TIGHT_TIMING = timedelta(minutes=5)


def derived_id(kind: str, *parts: object) -> UUID:
    """A stable id for something derived from ``parts`` (re-deriving gives the same id, so a
    retried or resumed emission is stored once)."""
    return UUID(derived_uuid(kind.encode(), *(str(p).encode() for p in parts)))


def automation_resource_id(automation_id: UUID | str) -> str:
    return f"{AUTOMATION_PREFIX}{automation_id}"


def automation_id_of(resource_id: str) -> UUID | None:
    """``herald.automation.<uuid>`` → the uuid; None for anything else."""
    if not resource_id.startswith(AUTOMATION_PREFIX):
        return None
    try:
        return UUID(resource_id[len(AUTOMATION_PREFIX) :])
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The loop guard


@dataclass(frozen=True, slots=True)
class Cause:
    """Which automations led to an event (oldest first) and how deep the chain is."""

    depth: int = 0
    chain: tuple[str, ...] = ()

    def then(self, automation_id: UUID) -> Cause:
        """The cause of an event that ``automation_id`` emits because of this one."""
        aid = str(automation_id)
        chain = self.chain if aid in self.chain else (*self.chain, aid)
        return Cause(self.depth + 1, chain)

    def labels(self) -> dict[str, str]:
        if not self.depth:
            return {}
        return {DEPTH_LABEL: str(self.depth), CHAIN_LABEL: " ".join(self.chain)}

    def merge(self, other: Cause) -> Cause:
        chain = self.chain + tuple(a for a in other.chain if a not in self.chain)
        return Cause(max(self.depth, other.depth), chain)


def _cause_from_labels(labels: Mapping[str, str]) -> Cause | None:
    depth = labels.get(DEPTH_LABEL)
    if depth is None:
        return None
    try:
        value = int(depth)
    except ValueError:
        value = MAX_DEPTH + 1  # a mangled label must not switch the guard off
    return Cause(value, tuple(labels.get(CHAIN_LABEL, "").split()))


def cause_of(event: ReceivedEvent) -> Cause:
    """The cause an event carries (``Cause()`` for events no automation caused)."""
    resource = event.resource
    if resource.get(RESOURCE_ID, "").startswith(AUTOMATION_PREFIX):
        found = _cause_from_labels(resource)
        if found is not None:
            return found
    for related in event.related:
        if related.get(RESOURCE_ROLE) == CAUSE_ROLE:
            found = _cause_from_labels(related)
            if found is not None:
                return found
    return Cause()


def firing_cause(firing: Firing) -> Cause:
    """The cause of what a firing makes happen: its triggering events' cause, plus it."""
    cause = Cause()
    for event in firing.events:
        cause = cause.merge(cause_of(event))
    return cause.then(firing.automation_id)


def guard_skips(event: ReceivedEvent, automation: Automation) -> bool:
    """The loop guard: True when ``event`` must not be evaluated against ``automation``."""
    cause = cause_of(event)
    return cause.depth > MAX_DEPTH or str(automation.id) in cause.chain


# --------------------------------------------------------------------------------------------
# The events


def _resource(
    automation: Automation, cause: Cause, *, with_trigger: bool = False
) -> dict[str, str]:
    labels = {
        RESOURCE_ID: automation_resource_id(automation.id),
        RESOURCE_NAME: automation.name,
    }
    trigger = automation.trigger
    if with_trigger:
        labels["prefect.trigger-type"] = trigger.type
    if isinstance(trigger, EventTrigger):
        labels["prefect.posture"] = trigger.posture
    labels.update(cause.labels())
    return labels


def cause_related(automation: Automation, cause: Cause) -> dict[str, str]:
    """The related resource an ``emit-event`` action adds to the event it emits."""
    return {
        RESOURCE_ID: automation_resource_id(automation.id),
        RESOURCE_ROLE: CAUSE_ROLE,
        RESOURCE_NAME: automation.name,
        **cause.labels(),
    }


def event_reference(event_id: UUID | str, role: str) -> dict[str, str]:
    return {RESOURCE_ID: f"{EVENT_PREFIX}{event_id}", RESOURCE_ROLE: role}


def crud_event(
    kind: str, automation: Automation, body: dict[str, Any], occurred: datetime, cause: Cause
) -> dict[str, Any]:
    """``herald.automation.created|updated|deleted``: payload = the automation JSON."""
    labels = {
        RESOURCE_ID: automation_resource_id(automation.id),
        RESOURCE_NAME: automation.name,
        **cause.labels(),
    }
    return {
        "occurred": format_time(occurred),
        "event": f"herald.automation.{kind}",
        "resource": labels,
        "related": [],
        "payload": body,
        "id": str(derived_id("herald.automation.crud", automation.id, kind, occurred)),
    }


def state_event_id(firing: Firing) -> UUID:
    return derived_id("herald.automation.state", firing.id)


def state_event(automation: Automation, firing: Firing, cause: Cause) -> dict[str, Any]:
    """``herald.automation.triggered`` or ``.resolved`` for a firing (P§6.5); ``occurred`` is
    the firing's (event) time."""
    event = firing.triggering_event
    payload: dict[str, Any] = {
        "triggering_labels": dict(firing.triggering_labels),
        "triggering_event": event.to_dict() if event is not None else None,
        "firing_id": str(firing.id),
        "trigger_path": firing.trigger_path,
    }
    if firing.resolves is not None:
        payload["resolves"] = str(firing.resolves)
    return {
        "occurred": format_time(firing.occurred),
        "event": f"herald.automation.{firing.kind}",
        "resource": _resource(automation, cause),
        "related": [event_reference(event.id, "triggering-event")] if event is not None else [],
        "payload": payload,
        "id": str(state_event_id(firing)),
    }


def action_event(
    kind: str,
    automation: Automation,
    firing: Firing,
    cause: Cause,
    *,
    event_id: UUID,
    occurred: datetime,
    payload: dict[str, Any],
    state_event_id: UUID,
    targets: Sequence[dict[str, str]] = (),
    follows: UUID | None = None,
) -> dict[str, Any]:
    """``herald.automation.action.triggered|executed|failed`` (P§6.5): related = the action's
    targets, then the automation-triggered event, then the triggering event."""
    related = [dict(t) for t in targets]
    related.append(event_reference(state_event_id, "automation-triggered-event"))
    if firing.triggering_event is not None:
        related.append(event_reference(firing.triggering_event.id, "triggering-event"))
    return {
        "occurred": format_time(occurred),
        "event": f"herald.automation.action.{kind}",
        "resource": _resource(automation, cause, with_trigger=True),
        "related": related,
        "payload": payload,
        "id": str(event_id),
        "follows": str(follows) if follows is not None else None,
    }


def follows_if_close(leader: ReceivedEvent | None, occurred: datetime) -> UUID | None:
    """Prefect sets ``follows`` only when the leader is within 5 minutes."""
    if leader is None or leader.occurred is None:
        return None
    return leader.id if abs(occurred - leader.occurred) <= TIGHT_TIMING else None
