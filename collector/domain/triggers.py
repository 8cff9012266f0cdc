"""Triggers (SPEC §7, Prefect P§5.1, §5.10): event, compound and sequence triggers, their
rules, and how the CLI describes them.

This module owns the *shape* of a trigger tree in Prefect's JSON shape; evaluating it is
``collector.automations.evaluator``. Parse untrusted input with
``collector.domain.automations.parse_trigger`` (errors name the field). ``Seconds`` and
``invalid`` are shared with the rest of the automation model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Union
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from collector.domain.events import RESOURCE_ID, ReceivedEvent

# Prefect's smallest proactive window: a shorter one would fire on ordinary delivery lag.
MIN_PROACTIVE_WITHIN = timedelta(seconds=10)
RELATED_LABEL_PREFIX = "related:"

ResourceSpecification = dict[str, str | list[str]]


def invalid(message: str) -> PydanticCustomError:
    # A custom error keeps pydantic from prefixing "Value error, " to our sentence.
    return PydanticCustomError("invalid_automation", message)


def _parse_seconds(value: Any) -> Any:
    """Accept Prefect's timedelta forms: a number of seconds (int, float or numeric string),
    an ISO 8601 duration (``PT30S``) or ``[D day[s], ]HH:MM:SS``; pydantic parses the strings."""
    if isinstance(value, bool):
        raise invalid("should be a number of seconds or a duration, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise invalid("should be a finite number of seconds")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            return text
        if not math.isfinite(seconds):
            raise invalid("should be a finite number of seconds")
        return timedelta(seconds=seconds)
    return value


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


# Prefect serialises timedeltas as a JSON number of seconds; so does Herald.
Seconds = Annotated[
    timedelta,
    BeforeValidator(_parse_seconds),
    PlainSerializer(_seconds, return_type=float, when_used="json"),
]


def _check_patterns(values: list[str], field: str) -> list[str]:
    # Prefect models these as sets: order carries no meaning, duplicates none either. Keeping
    # them sorted also makes an unchanged trigger serialise identically (divergence 1).
    for v in values:
        if not v:
            raise invalid(f"{field} entries must be non-empty strings")
    return sorted(set(values))


def _check_spec(spec: ResourceSpecification) -> ResourceSpecification:
    for label, expected in spec.items():
        if not label:
            raise invalid("label names must be non-empty")
        if isinstance(expected, list) and any(not isinstance(v, str) for v in expected):
            raise invalid(f"values for label {label!r} must be strings")
    return spec


class EventTrigger(BaseModel):
    """Fires on the presence (Reactive) or absence (Proactive) of matching events (P§5.1)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["event"] = "event"
    id: UUID = Field(default_factory=uuid4)
    match: ResourceSpecification = Field(
        default_factory=dict, description="label spec the primary resource must satisfy"
    )
    match_related: ResourceSpecification | list[ResourceSpecification] = Field(
        default_factory=dict,
        description="spec(s) some related resource must satisfy; a list means all of them",
    )
    after: list[str] = Field(
        default_factory=list, description="event-name globs that arm the trigger"
    )
    expect: list[str] = Field(
        default_factory=list, description="event-name globs to count; empty = any event"
    )
    for_each: list[str] = Field(
        default_factory=list,
        description="labels that split buckets; related:<role>:<label> reaches related ones",
    )
    # Prefect's server requires posture; its client defaults to Reactive. Herald takes the
    # client's default so hand-written JSON can leave it out.
    posture: Literal["Reactive", "Proactive"] = "Reactive"
    threshold: int = Field(1, description="Reactive: fire at >= N; Proactive: fire at < N")
    within: Seconds = Field(
        default=timedelta(0),
        validate_default=True,
        description="window length in seconds (Proactive: at least 10; 0 becomes 10)",
    )

    @field_validator("match")
    @classmethod
    def _match(cls, v: ResourceSpecification) -> ResourceSpecification:
        return _check_spec(v)

    @field_validator("match_related")
    @classmethod
    def _match_related(
        cls, v: ResourceSpecification | list[ResourceSpecification]
    ) -> ResourceSpecification | list[ResourceSpecification]:
        for spec in v if isinstance(v, list) else [v]:
            _check_spec(spec)
        return v

    @field_validator("after", "expect")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _check_patterns(v, info.field_name or "patterns")

    @field_validator("for_each")
    @classmethod
    def _for_each(cls, v: list[str]) -> list[str]:
        for label in v:
            if label.startswith(RELATED_LABEL_PREFIX):
                parts = label.split(":", 2)
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise invalid(f"{label!r} should have the form related:<role>:<label>")
        return _check_patterns(v, "for_each")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: int) -> int:
        if v < 0:
            raise invalid("must be greater than or equal to 0")
        return v

    @field_validator("within")
    @classmethod
    def _within(cls, v: timedelta, info: ValidationInfo) -> timedelta:
        if v < timedelta(0):
            raise invalid("must be greater than or equal to 0")
        if info.data.get("posture") == "Proactive":
            if v == timedelta(0):
                return MIN_PROACTIVE_WITHIN
            if v < MIN_PROACTIVE_WITHIN:
                raise invalid(
                    "`within` for Proactive triggers must be greater than or equal to 10 seconds"
                )
        return v

    @property
    def immediate(self) -> bool:
        """Reactive with no window: every matching event counts, whenever it occurred."""
        return self.posture == "Reactive" and self.within == timedelta(0)

    def related_specs(self) -> list[ResourceSpecification]:
        return self.match_related if isinstance(self.match_related, list) else [self.match_related]


class _Composite(BaseModel):
    """The rules compound and sequence triggers share: at least one child, ``within`` ≥ 0."""

    _kind: ClassVar[str]

    @field_validator("triggers", check_fields=False)
    @classmethod
    def _triggers(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise invalid(f"a {cls._kind} trigger needs at least one child trigger")
        return v

    @field_validator("within", check_fields=False)
    @classmethod
    def _within(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(0):
            raise invalid("must be greater than or equal to 0")
        return v


class CompoundTrigger(_Composite):
    """Fires when ``require`` of its child triggers fired within ``within`` (P§5.10)."""

    model_config = ConfigDict(extra="forbid")
    _kind = "compound"

    type: Literal["compound"] = "compound"
    id: UUID = Field(default_factory=uuid4)
    triggers: list[TriggerTypes]
    # Prefect makes the key mandatory (null = no limit); Herald lets it be left out.
    within: Seconds | None = None
    require: int | Literal["any", "all"]

    @field_validator("require")
    @classmethod
    def _require(cls, v: int | str, info: ValidationInfo) -> int | str:
        triggers = info.data.get("triggers")
        if isinstance(v, int) and triggers is not None and not 1 <= v <= len(triggers):
            raise invalid(
                f"must be between 1 and the number of triggers ({len(triggers)}), got {v}"
            )
        return v

    @property
    def num_expected_firings(self) -> int:
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return int(self.require)


class SequenceTrigger(_Composite):
    """Fires when its child triggers fired in the declared order within ``within`` (P§5.10)."""

    model_config = ConfigDict(extra="forbid")
    _kind = "sequence"

    type: Literal["sequence"] = "sequence"
    id: UUID = Field(default_factory=uuid4)
    triggers: list[TriggerTypes]
    within: Seconds | None = None

    @property
    def num_expected_firings(self) -> int:
        return len(self.triggers)


def _trigger_kind(value: Any) -> str | None:
    """Prefect's client discriminator (P§5.1): ``type`` if given, else infer from the keys."""
    if isinstance(value, BaseModel):
        return getattr(value, "type", None)
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind is not None:
        return str(kind)
    if value.get("posture") == "Metric":
        return "metric"
    if "triggers" in value:
        return "compound" if "require" in value else "sequence"
    return "event"


TriggerTypes = Annotated[
    Union[  # noqa: UP007 - Annotated tags need the explicit Union form
        Annotated[EventTrigger, Tag("event")],
        Annotated[CompoundTrigger, Tag("compound")],
        Annotated[SequenceTrigger, Tag("sequence")],
    ],
    Discriminator(_trigger_kind),
]
CompositeTrigger = CompoundTrigger | SequenceTrigger
Trigger = EventTrigger | CompoundTrigger | SequenceTrigger
TRIGGER_TYPES = ("event", "compound", "sequence")

CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()


def iter_triggers(trigger: Trigger, path: str = "trigger") -> Iterator[tuple[str, Trigger]]:
    """Every node of a trigger tree with its path (``trigger``, ``trigger.triggers[1]``, …),
    parents before children."""
    yield path, trigger
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for i, child in enumerate(trigger.triggers):
            yield from iter_triggers(child, f"{path}.triggers[{i}]")


# --------------------------------------------------------------------------------------------
# What the CLI shows


def default_trigger_for_event(event: ReceivedEvent) -> EventTrigger:
    """Prefect's "automate this event" (P§5.12): fire on every such event of this resource."""
    return EventTrigger(
        posture="Reactive",
        match={RESOURCE_ID: event.resource[RESOURCE_ID]},
        match_related={},
        after=[],
        expect=[event.event],
        for_each=[],
        threshold=1,
        within=timedelta(0),
    )


def _names(patterns: list[str]) -> str:
    return ", ".join(patterns) if patterns else "any event"


def _duration(value: timedelta) -> str:
    return str(value)  # H:MM:SS, as Prefect's CLI prints timedeltas


def describe_trigger(trigger: Trigger) -> str:
    """Describe a trigger in words, like ``prefect automation ls`` (P§7.4); children of
    composite triggers are indented by two spaces per level."""
    if isinstance(trigger, EventTrigger):
        if trigger.posture == "Reactive":
            text = f"Reactive: expecting {trigger.threshold} of {_names(trigger.expect)}"
            if trigger.within > timedelta(0):
                text += f" within {_duration(trigger.within)}"
        else:
            text = (
                f"Proactive: expecting {trigger.threshold} {_names(trigger.expect)} "
                f"event within {_duration(trigger.within)}"
            )
        if trigger.after:
            text += f" after {_names(trigger.after)}"
        if trigger.for_each:
            text += f" for each {', '.join(trigger.for_each)}"
        return text
    if isinstance(trigger, CompoundTrigger):
        head = f"{str(trigger.require).capitalize()} of:"
    else:
        head = "In this order:"
    if trigger.within is not None:
        head = f"{head[:-1]} (within {_duration(trigger.within)}):"
    children = "\n".join(
        "\n".join(f"  {line}" for line in describe_trigger(child).splitlines())
        for child in trigger.triggers
    )
    return f"{head}\n{children}"
