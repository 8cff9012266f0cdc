"""Action templates (SPEC §7, Prefect P§6.6): sandboxed Jinja2, validated on save.

This module owns how a template string becomes text: the sandbox (jinja2's
``ImmutableSandboxedEnvironment`` plus Prefect's limits — ``range()`` at most 100 items, at most
10 ``for`` loops nested at most 2 deep — and Herald's own caps on ``*``/``**`` and output size),
the objects templates see (``event``, ``automation``, ``labels``, ``firing``, ``firings``,
``events``), and the errors: ``InvalidAutomation`` naming the action field, both when an
automation is saved (syntax and loop limits) and when a template fails to render.

Templates reach labels the way Prefect's do: ``{{ event.resource.id }}``,
``{{ event.resource.labels.prefect.resource.name }}``, ``{{ event.resource['region'] }}``,
``{% for label, value in event.resource %}``, ``{{ labels.region }}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from jinja2 import ChainableUndefined, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from collector.automations.evaluator import Firing
from collector.domain.automations import Automation
from collector.domain.events import (
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    ReceivedEvent,
    format_time,
)
from collector.errors import InvalidAutomation

MAX_RANGE = 100  # Prefect: jinja2.sandbox.MAX_RANGE = 100
MAX_FOR_LOOPS = 10  # Prefect: MAX_LOOP_COUNT
MAX_LOOP_NESTING = 2  # Prefect: MAX_NESTED_LOOP_DEPTH
# Herald's additions: Prefect leaves `'x' * 10**9` and `9 ** 9 ** 9` to exhaust the server.
MAX_REPEAT_LENGTH = 100_000
MAX_EXPONENT = 100
MAX_OUTPUT_CHARS = 1_000_000
_COMPILED_CACHE_SIZE = 512


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return rng


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, TemplateEvent):
        return value.to_dict()
    if isinstance(value, TemplateResource):
        return dict(value.items())
    if isinstance(value, LabelDiver):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson HTML-escapes; webhook bodies want plain JSON (Prefect replaces it too).
    return json.dumps(value, default=_json_default, indent=indent)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Prefect's sandbox without its process-wide ``MAX_RANGE`` patch, plus size caps."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=ChainableUndefined, autoescape=False)
        self.globals["range"] = _limited_range
        self.filters["tojson"] = _tojson

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponents are limited to {MAX_EXPONENT} in templates")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_REPEAT_LENGTH
                ):
                    raise SecurityError(
                        f"repetition is limited to {MAX_REPEAT_LENGTH} items in templates"
                    )
        return super().call_binop(context, operator, left, right)


def _loop_depth(node: nodes.Node, depth: int = 0) -> int:
    if isinstance(node, nodes.For):
        depth += 1
    return max((_loop_depth(child, depth) for child in node.iter_child_nodes()), default=depth)


def maybe_template(text: str) -> bool:
    """Whether ``text`` holds Jinja syntax at all; plain strings are used as they are."""
    return "{{" in text or "{%" in text or "{#" in text


class TemplateEngine:
    """Validates and renders templates. One per process is enough: it caches compiled
    templates (bounded), and rendering does not mutate it otherwise."""

    def __init__(self) -> None:
        self._env = _Sandbox()
        self._compiled: dict[str, Any] = {}

    def _parse(self, text: str, where: str) -> nodes.Template:
        try:
            root = self._env.parse(text)
        except TemplateSyntaxError as exc:
            raise InvalidAutomation(
                f"{where}: template syntax error on line {exc.lineno}: {exc.message}"
            ) from None
        loops = list(root.find_all(nodes.For))
        if len(loops) > MAX_FOR_LOOPS:
            raise InvalidAutomation(
                f"{where}: the template contains {len(loops)} for loops; "
                f"at most {MAX_FOR_LOOPS} are allowed"
            )
        depth = _loop_depth(root)
        if depth > MAX_LOOP_NESTING:
            raise InvalidAutomation(
                f"{where}: the template nests for loops {depth} deep; "
                f"at most {MAX_LOOP_NESTING} levels are allowed"
            )
        return root

    def validate(self, text: str, where: str = "template") -> None:
        """Raise ``InvalidAutomation`` naming ``where`` if ``text`` is not a valid template."""
        if maybe_template(text):
            self._parse(text, where)

    def render(self, text: str, context: Mapping[str, Any], where: str = "template") -> str:
        """Render ``text``; any failure is ``InvalidAutomation`` naming ``where``."""
        if not maybe_template(text):
            return text
        compiled = self._compiled.get(text)
        if compiled is None:
            self._parse(text, where)
            compiled = self._env.from_string(text)
            if len(self._compiled) >= _COMPILED_CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[text] = compiled
        try:
            out = compiled.render(dict(context))
        except Exception as exc:  # user code: every failure is the template's, not ours
            raise InvalidAutomation(
                f"{where}: template rendering failed: {type(exc).__name__}: {exc}"
            ) from None
        if len(out) > MAX_OUTPUT_CHARS:
            raise InvalidAutomation(
                f"{where}: the rendered template is {len(out)} characters; "
                f"at most {MAX_OUTPUT_CHARS} are allowed"
            )
        return out

    def render_value(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        """Render every string inside a JSON-like value (emit-event payloads, labels)."""
        if isinstance(value, str):
            return self.render(value, context, where)
        if isinstance(value, dict):
            return {k: self.render_value(v, context, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_value(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
        return value


def validate_template(text: str, where: str = "template") -> None:
    """Check one template's syntax and loop limits; ``InvalidAutomation`` names ``where``."""
    TemplateEngine().validate(text, where)


def validate_automation_templates(automation: Automation) -> None:
    """Check every template of an automation (call when it is saved)."""
    engine = TemplateEngine()
    for where, text in automation.templates():
        engine.validate(text, where)


def render_template(text: str, context: Mapping[str, Any], where: str = "template") -> str:
    """Render one template with a throwaway engine (prefer a shared ``TemplateEngine``)."""
    return TemplateEngine().render(text, context, where)


# --------------------------------------------------------------------------------------------
# What templates see


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
) -> dict[str, Any]:
    """The names a template sees (P§6.6). ``event`` defaults to the firing's triggering
    event; pass the ``herald.automation.triggered``/``resolved`` event instead for
    ``actions_on_trigger``/``actions_on_resolve``, as Prefect does."""
    if event is None and firing is not None:
        event = firing.triggering_event
    firings = list(firing.walk()) if firing is not None else []
    events = firing.events if firing is not None else []
    return {
        "automation": automation.model_dump(mode="json"),
        "event": TemplateEvent(event) if event is not None else None,
        "labels": LabelDiver(dict(firing.triggering_labels) if firing else {}),
        "firing": firing.to_dict() if firing is not None else None,
        "firings": [f.to_dict() for f in firings],
        "events": [TemplateEvent(e) for e in events],
    }
