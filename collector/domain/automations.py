"""Automations (SPEC §7, Prefect P§6.1, §6.3): the models and their rules.

This module owns the *shape* of an automation — its trigger (``collector.domain.triggers``),
its actions in Prefect's JSON shape with Herald's action types, its rate limit — and the rules
a saved automation must satisfy. It does
not evaluate triggers (``collector.automations.evaluator``) nor render templates
(``collector.automations.templates``; template syntax is checked there, when an automation is
saved, because this package depends on pydantic and the standard library only).

Parse untrusted input with ``parse_automation`` / ``parse_trigger``: they raise
``InvalidAutomation`` with a message that starts with the offending field's path, e.g.
``trigger.within: …`` or ``actions[0].automation_id: …``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal, Union
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE
from collector.domain.triggers import (
    TRIGGER_TYPES,
    Seconds,
    Trigger,
    TriggerTypes,
    invalid,
)
from collector.errors import InvalidAutomation

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
            raise invalid("must start with http:// or https://")
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
            raise invalid(f"must include a non-empty {RESOURCE_ID} label")
        return v

    @field_validator("related")
    @classmethod
    def _related(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, item in enumerate(v):
            if not item.get(RESOURCE_ID) or not item.get(RESOURCE_ROLE):
                raise invalid(
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
            raise invalid("required when source is 'selected'")
        if source == "inferred" and v is not None:
            raise invalid("not allowed when source is 'inferred'")
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
            raise invalid("the program (argv[0]) must be non-empty")
        return v

    def templates(self) -> list[tuple[str, str]]:
        return [(f"argv[{i}]", a) for i, a in enumerate(self.argv)]


Action = Annotated[
    DoNothing | CallWebhook | EmitEvent | PauseAutomation | ResumeAutomation | RunCommand,
    Field(discriminator="type"),
]
# Prefect's action types (P§6.3) Herald has no counterpart for: named in the error.
PREFECT_ONLY_ACTIONS = (
    "run-deployment",
    "pause-deployment",
    "resume-deployment",
    "cancel-flow-run",
    "suspend-flow-run",
    "resume-flow-run",
    "delete-flow-run",
    "change-flow-run-state",
    "pause-work-pool",
    "resume-work-pool",
    "pause-work-queue",
    "resume-work-queue",
    "send-notification",
    "declare-incident",
)
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
            raise invalid("must be greater than 0")
        if v > timedelta(days=7):
            raise invalid("must be at most 7 days (604800 seconds)")
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
            raise invalid("must not be empty")
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
        if tag in PREFECT_ONLY_ACTIONS:
            return (
                f"{path}.type: {tag!r} is a Prefect action type that Herald does not have "
                f"(it runs no flows, deployments or blocks); Herald's action types: "
                f"{', '.join(ACTION_TYPES)}"
            )
        return f"{path}.type: unknown type {tag!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "extra_forbidden" and loc.endswith("block_document_id"):
        return (
            f"{path}: Herald's call-webhook takes url (and method, headers, body), not a "
            "Prefect webhook block"
        )
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
        errors = exc.errors()
        # A Prefect block webhook also lacks ``url``: say why, not just "url: required".
        block = [e for e in errors if e["loc"][-1:] == ("block_document_id",)]
        raise InvalidAutomation(_error_message((block or errors)[0], "")) from None


# Built once: building a TypeAdapter compiles a validator.
_TRIGGER = TypeAdapter[Trigger](TriggerTypes)


def parse_trigger(data: Any, where: str = "trigger") -> Trigger:
    """Validate one trigger (event, compound or sequence)."""
    try:
        return _TRIGGER.validate_python(data)
    except ValidationError as exc:
        raise InvalidAutomation(_error_message(exc.errors()[0], where)) from None
