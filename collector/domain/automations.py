"""Automations (SPEC §7, Prefect P§5.1, §5.10, §6.1, §6.3): the models and their rules.

This module owns the *shape* of an automation — its trigger tree and its actions, in Prefect's
JSON shape with Herald's action types — and the rules a saved automation must satisfy. It does
not evaluate triggers (``collector.automations.evaluator``) nor render templates
(``collector.automations.templates``; template syntax is checked there, when an automation is
saved, because this package depends on pydantic and the standard library only).

Parse untrusted input with ``parse_automation`` / ``parse_trigger``: they raise
``InvalidAutomation`` with a message that starts with the offending field's path, e.g.
``trigger.within: …`` or ``actions[0].automation_id: …``.
"""

from __future__ import annotations

import json
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
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE, ReceivedEvent
from collector.errors import InvalidAutomation

# Prefect's smallest proactive window: a shorter one would fire on ordinary delivery lag.
MIN_PROACTIVE_WITHIN = timedelta(seconds=10)
RELATED_LABEL_PREFIX = "related:"

ResourceSpecification = dict[str, str | list[str]]


def _invalid(message: str) -> PydanticCustomError:
    # A custom error keeps pydantic from prefixing "Value error, " to our sentence.
    return PydanticCustomError("invalid_automation", message)


def _parse_seconds(value: Any) -> Any:
    """Accept Prefect's timedelta forms: a number of seconds (int, float or numeric string),
    an ISO 8601 duration (``PT30S``) or ``[D day[s], ]HH:MM:SS``; pydantic parses the strings."""
    if isinstance(value, bool):
        raise _invalid("should be a number of seconds or a duration, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _invalid("should be a finite number of seconds")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            return text
        if not math.isfinite(seconds):
            raise _invalid("should be a finite number of seconds")
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
            raise _invalid(f"{field} entries must be non-empty strings")
    return sorted(set(values))


def _check_spec(spec: ResourceSpecification) -> ResourceSpecification:
    for label, expected in spec.items():
        if not label:
            raise _invalid("label names must be non-empty")
        if isinstance(expected, list) and any(not isinstance(v, str) for v in expected):
            raise _invalid(f"values for label {label!r} must be strings")
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
                    raise _invalid(f"{label!r} should have the form related:<role>:<label>")
        return _check_patterns(v, "for_each")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: int) -> int:
        if v < 0:
            raise _invalid("must be greater than or equal to 0")
        return v

    @field_validator("within")
    @classmethod
    def _within(cls, v: timedelta, info: ValidationInfo) -> timedelta:
        if v < timedelta(0):
            raise _invalid("must be greater than or equal to 0")
        if info.data.get("posture") == "Proactive":
            if v == timedelta(0):
                return MIN_PROACTIVE_WITHIN
            if v < MIN_PROACTIVE_WITHIN:
                raise _invalid(
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
            raise _invalid(f"a {cls._kind} trigger needs at least one child trigger")
        return v

    @field_validator("within", check_fields=False)
    @classmethod
    def _within(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(0):
            raise _invalid("must be greater than or equal to 0")
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
            raise _invalid(
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


# --------------------------------------------------------------------------------------------
# Actions (Herald's types; P§6.3 for the shape of source/selected/inferred)


class DoNothing(BaseModel):
    """Does nothing; useful to record firings (and to test triggers)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["do-nothing"] = "do-nothing"

    def templates(self) -> list[tuple[str, str]]:
        return []


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class CallWebhook(BaseModel):
    """Sends an HTTP request. ``url``, header values and ``body`` are templates."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["call-webhook"] = "call-webhook"
    url: str = Field(description="http(s) URL; may contain template expressions")
    method: HttpMethod = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    # None = the action runner sends its default JSON document. Like Prefect's webhook
    # ``payload``, a JSON object or list given here is dumped to a string template.
    body: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    retries: int = Field(3, ge=0, le=10, description="extra attempts, with backoff")

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise _invalid("must start with http:// or https://")
        return v

    @field_validator("body", mode="before")
    @classmethod
    def _body(cls, v: Any) -> Any:
        if isinstance(v, dict | list):
            return json.dumps(v)
        return v

    def templates(self) -> list[tuple[str, str]]:
        out = [("url", self.url)]
        out += [(f"headers.{k}", v) for k, v in self.headers.items()]
        if self.body is not None:
            out.append(("body", self.body))
        return out


def _leaf_templates(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaf_templates(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaf_templates(v, f"{path}[{i}]")


class EmitEvent(BaseModel):
    """Emits an event. The name, every label value and every string in the payload are
    templates."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["emit-event"] = "emit-event"
    event: str = Field(min_length=1, description="event name template")
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resource")
    @classmethod
    def _resource(cls, v: dict[str, str]) -> dict[str, str]:
        if not v.get(RESOURCE_ID):
            raise _invalid(f"must include a non-empty {RESOURCE_ID} label")
        return v

    @field_validator("related")
    @classmethod
    def _related(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, item in enumerate(v):
            if not item.get(RESOURCE_ID) or not item.get(RESOURCE_ROLE):
                raise _invalid(
                    f"item {i} must include non-empty {RESOURCE_ID} and {RESOURCE_ROLE} labels"
                )
        return v

    def templates(self) -> list[tuple[str, str]]:
        out = [("event", self.event)]
        out += list(_leaf_templates(self.resource, "resource"))
        out += list(_leaf_templates(self.related, "related"))
        out += list(_leaf_templates(self.payload, "payload"))
        return out


class _AutomationAction(BaseModel):
    """pause-automation / resume-automation: a selected automation, or the first
    ``herald.automation.<id>`` resource involved in the triggering event (inferred)."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["selected", "inferred"] = "selected"
    automation_id: UUID | None = Field(default=None, validate_default=True)

    @field_validator("automation_id")
    @classmethod
    def _source(cls, v: UUID | None, info: ValidationInfo) -> UUID | None:
        # The id goes with source="selected" only (P§6.3: "… is required" / "… is not allowed").
        source = info.data.get("source")
        if source == "selected" and v is None:
            raise _invalid("required when source is 'selected'")
        if source == "inferred" and v is not None:
            raise _invalid("not allowed when source is 'inferred'")
        return v

    def templates(self) -> list[tuple[str, str]]:
        return []


class PauseAutomation(_AutomationAction):
    type: Literal["pause-automation"] = "pause-automation"


class ResumeAutomation(_AutomationAction):
    type: Literal["resume-automation"] = "resume-automation"


class RunCommand(BaseModel):
    """Runs a program (no shell). Every argv item is a template. Off unless configured."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["run-command"] = "run-command"
    argv: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(30.0, gt=0, le=3600)

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise _invalid("the program (argv[0]) must be non-empty")
        return v

    def templates(self) -> list[tuple[str, str]]:
        return [(f"argv[{i}]", a) for i, a in enumerate(self.argv)]


Action = Annotated[
    DoNothing | CallWebhook | EmitEvent | PauseAutomation | ResumeAutomation | RunCommand,
    Field(discriminator="type"),
]
ACTION_TYPES = (
    "do-nothing",
    "call-webhook",
    "emit-event",
    "pause-automation",
    "resume-automation",
    "run-command",
)


# --------------------------------------------------------------------------------------------
# Rate limit (Herald's addition: Prefect has none)

MAX_RATE_LIMIT_FIRINGS = 100_000  # bounds the limiter's memory (one timestamp per firing)


class RateLimit(BaseModel):
    """At most ``max_firings`` firings of the automation run their actions in any window of
    ``within`` seconds; the actions of the others are recorded as ``skipped``. A cooldown
    (Alertmanager's ``repeat_interval``) is ``max_firings: 1``."""

    model_config = ConfigDict(extra="forbid")
    max_firings: int = Field(ge=1, le=MAX_RATE_LIMIT_FIRINGS)
    within: Seconds = Field(default=timedelta(seconds=60), validate_default=True)

    @field_validator("within")
    @classmethod
    def _within(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise _invalid("must be greater than 0")
        if v > timedelta(days=7):
            raise _invalid("must be at most 7 days (604800 seconds)")
        return v


RATE_LIMIT_TAGS = ("limit", "off")


def _rate_limit_kind(value: Any) -> str:
    return "off" if isinstance(value, str) else "limit"


# An object, or "off" (no limit at all); null/absent = the server's default for the automation.
RateLimitSetting = Annotated[
    Union[  # noqa: UP007 - Annotated tags need the explicit Union form
        Annotated[RateLimit, Tag("limit")],
        Annotated[Literal["off"], Tag("off")],
    ],
    Discriminator(_rate_limit_kind),
]

# Action types that reach outside Herald: the server's default rate limit applies to them.
CALLING_OUT = ("call-webhook", "run-command")


# --------------------------------------------------------------------------------------------
# Automation


class Automation(BaseModel):
    """An automation (P§6.1): a trigger and the actions to run when it fires/resolves."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    trigger: TriggerTypes
    actions: list[Action]
    actions_on_trigger: list[Action] = Field(default_factory=list)
    actions_on_resolve: list[Action] = Field(default_factory=list)
    owner_resource: str | None = None
    # Herald's addition (optional, so Prefect's JSON loads as is): see RateLimit.
    rate_limit: RateLimitSetting | None = None
    id: UUID = Field(default_factory=uuid4)

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        # Prefect's read shape (e.g. `prefect automation inspect --json`) carries the ORM's
        # timestamps; accepting and dropping them lets that JSON be loaded as is.
        if isinstance(data, dict) and ("created" in data or "updated" in data):
            data = {k: v for k, v in data.items() if k not in ("created", "updated")}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise _invalid("must not be empty")
        return v

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Without a rate_limit of its own the JSON is Prefect's shape exactly (no null key).
        data: dict[str, Any] = handler(self)
        if data.get("rate_limit", "") is None:
            del data["rate_limit"]
        return data

    def all_actions(self) -> Iterator[tuple[str, int, Any]]:
        """``(list name, index, action)`` over actions, actions_on_trigger, actions_on_resolve."""
        for field in ("actions", "actions_on_trigger", "actions_on_resolve"):
            for i, action in enumerate(getattr(self, field)):
                yield field, i, action

    def calls_out(self) -> bool:
        """Whether any action reaches outside Herald (a webhook or a command)."""
        return any(action.type in CALLING_OUT for _, _, action in self.all_actions())

    def templates(self) -> list[tuple[str, str]]:
        """Every template with the path of the field it came from, e.g. ``actions[0].body``."""
        return [
            (f"{field}[{i}].{where}", text)
            for field, i, action in self.all_actions()
            for where, text in action.templates()
        ]


def iter_triggers(trigger: Trigger, path: str = "trigger") -> Iterator[tuple[str, Trigger]]:
    """Every node of a trigger tree with its path (``trigger``, ``trigger.triggers[1]``, …),
    parents before children."""
    yield path, trigger
    if isinstance(trigger, CompoundTrigger | SequenceTrigger):
        for i, child in enumerate(trigger.triggers):
            yield from iter_triggers(child, f"{path}.triggers[{i}]")


# --------------------------------------------------------------------------------------------
# Parsing with errors that name the field


def _format_loc(loc: tuple[int | str, ...]) -> str:
    """``('actions', 0, 'call-webhook', 'url')`` → ``actions[0].url``: union tags dropped."""
    out = ""
    prev: int | str | None = None
    for part in loc:
        is_tag = isinstance(part, str) and (
            (part in ACTION_TYPES and isinstance(prev, int))
            or (part in TRIGGER_TYPES and (isinstance(prev, int) or prev in ("trigger", None)))
            or (part in RATE_LIMIT_TAGS and prev == "rate_limit")
        )
        if isinstance(part, int):
            out += f"[{part}]"
        elif not is_tag:
            out += f".{part}" if out else str(part)
        prev = part
    return out


def _error_message(error: Any, where: str) -> str:
    loc = _format_loc(tuple(error["loc"]))
    path = f"{where}.{loc}" if where and loc else (where or loc or "automation")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        if tag == "metric":
            return (
                f"{path}.type: metric triggers are not supported (Prefect runs them only "
                "on Prefect Cloud); use event, compound or sequence"
            )
        return f"{path}.type: unknown type {tag!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{path}.type: required; one of {', '.join(ACTION_TYPES)}"
    if path == "rate_limit" and kind in ("literal_error", "model_type"):
        return (
            f'{path}: should be {{"max_firings": N, "within": seconds}}, "off" (no limit) or '
            "null (the server's default)"
        )
    if kind == "missing":
        return f"{path}: required"
    if kind == "extra_forbidden":
        return f"{path}: unknown field"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind.startswith(("time_delta", "timedelta")):
        msg = "should be a valid timedelta (seconds, PT30S or HH:MM:SS)"
    return f"{path}: {msg}"


def parse_automation(data: Any) -> Automation:
    """Validate automation JSON; ``InvalidAutomation`` names the first offending field."""
    try:
        return Automation.model_validate(data)
    except ValidationError as exc:
        raise InvalidAutomation(_error_message(exc.errors()[0], "")) from None


def parse_trigger(data: Any, where: str = "trigger") -> Trigger:
    """Validate one trigger (event, compound or sequence)."""
    try:
        return TypeAdapter(TriggerTypes).validate_python(data)
    except ValidationError as exc:
        raise InvalidAutomation(_error_message(exc.errors()[0], where)) from None


# --------------------------------------------------------------------------------------------
# Helpers the CLI and API share


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
