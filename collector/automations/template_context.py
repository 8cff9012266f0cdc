"""What action templates see (SPEC §7, Prefect P§6.6): ``event``, ``automation``, ``labels``,
``firing``, ``firings``, ``events`` and, where allowed, ``secrets``.

Templates reach labels the way Prefect's do: ``{{ event.resource.id }}``,
``{{ event.resource.labels.prefect.resource.name }}``, ``{{ event.resource['region'] }}``,
``{% for label, value in event.resource %}``, ``{{ labels.region }}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from collector.automations.secrets import SecretsView
from collector.domain.automation_records import Firing
from collector.domain.automations import Automation
from collector.domain.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    ReceivedEvent,
)


class LabelDiver:
    """Dotted label names reached as attributes: ``labels.prefect.resource.id``. A name can be
    both a value and a parent (``hello.world`` and ``hello.world.again``): the diver for
    ``hello.world`` renders as its value and still dives further."""

    __slots__ = ("_labels", "_prefix")

    def __init__(self, labels: Mapping[str, str], prefix: str = "") -> None:
        self._labels = labels
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        full = self._prefix + name
        if any(key.startswith(full + ".") for key in self._labels):
            return LabelDiver(self._labels, full + ".")
        if full in self._labels:
            return self._labels[full]
        raise AttributeError(name)

    def __getitem__(self, key: str) -> Any:
        full = self._prefix + key
        if full in self._labels:
            return self._labels[full]
        return self.__getattr__(key)

    def _value(self) -> str | None:
        return self._labels.get(self._prefix[:-1]) if self._prefix else None

    def __str__(self) -> str:
        value = self._value()
        if value is not None:
            return value
        return "" if self._prefix else json.dumps(dict(self._labels))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self._value() == other
        if isinstance(other, LabelDiver):
            return (self._labels, self._prefix) == (other._labels, other._prefix)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._prefix)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((k, v) for k, v in self._labels.items() if k.startswith(self._prefix))

    def __bool__(self) -> bool:
        return (
            any(k.startswith(self._prefix) for k in self._labels)
            if self._prefix
            else bool(self._labels)
        )


class TemplateResource:
    """A resource as templates see it: ``.id``, ``.name``, ``.role``, ``.labels`` (a
    ``LabelDiver``), ``resource['label']``, and iteration over ``(label, value)`` pairs."""

    __slots__ = ("_labels",)

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    @property
    def id(self) -> str:
        return self._labels.get(RESOURCE_ID, "")

    @property
    def name(self) -> str | None:
        return self._labels.get(RESOURCE_NAME)

    @property
    def role(self) -> str | None:
        return self._labels.get(RESOURCE_ROLE)

    @property
    def labels(self) -> LabelDiver:
        return LabelDiver(self._labels)

    def __getitem__(self, label: str) -> str:
        return self._labels[label]

    def get(self, label: str, default: Any = None) -> Any:
        return self._labels.get(label, default)

    def __contains__(self, label: object) -> bool:
        return label in self._labels

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._labels.items())

    def __len__(self) -> int:
        return len(self._labels)

    def items(self) -> list[tuple[str, str]]:
        return list(self._labels.items())

    def keys(self) -> list[str]:
        return list(self._labels)

    def values(self) -> list[str]:
        return list(self._labels.values())

    def __str__(self) -> str:
        return self.id


class TemplateEvent:
    """An event as templates see it (Prefect's ``ReceivedEvent`` surface)."""

    __slots__ = (
        "_event",
        "event",
        "follows",
        "id",
        "occurred",
        "payload",
        "received",
        "related",
        "resource",
        "resource_in_role",
        "resources_in_role",
    )

    def __init__(self, event: ReceivedEvent) -> None:
        self._event = event
        self.id = str(event.id)
        self.event = event.event
        self.occurred = event.occurred
        self.received = event.received
        self.follows = str(event.follows) if event.follows else None
        self.payload = event.payload
        self.resource = TemplateResource(event.resource)
        self.related = [TemplateResource(r) for r in event.related]
        by_role: dict[str, list[TemplateResource]] = {}
        for r in self.related:
            by_role.setdefault(r.role or "", []).append(r)
        self.resources_in_role = by_role
        self.resource_in_role = {role: rs[0] for role, rs in by_role.items()}

    def to_dict(self) -> dict[str, Any]:
        return self._event.to_dict()

    def __str__(self) -> str:
        return self.event


def build_context(
    automation: Automation,
    firing: Firing | None = None,
    event: ReceivedEvent | None = None,
    *,
    public: Mapping[str, Any] | None = None,
    secrets: SecretsView | None = None,
) -> dict[str, Any]:
    """The names a template sees (P§6.6). ``event`` defaults to the firing's triggering
    event; pass the ``herald.automation.triggered``/``resolved`` event instead for
    ``actions_on_trigger``/``actions_on_resolve``, as Prefect does. ``automation`` is the
    public form (``public``: secrets as markers) so a template cannot copy a secret into an
    event; ``secrets`` is given only to actions that may use ``{{ secrets.NAME }}``."""
    if event is None and firing is not None:
        event = firing.triggering_event
    firings = list(firing.walk()) if firing is not None else []
    events = firing.events if firing is not None else []
    context: dict[str, Any] = {
        "automation": dict(public) if public is not None else automation.model_dump(mode="json"),
        "event": TemplateEvent(event) if event is not None else None,
        "labels": LabelDiver(dict(firing.triggering_labels) if firing else {}),
        "firing": firing.to_dict() if firing is not None else None,
        "firings": [f.to_dict() for f in firings],
        "events": [TemplateEvent(e) for e in events],
    }
    if secrets is not None:
        context["secrets"] = secrets
    return context
