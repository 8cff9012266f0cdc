"""Automation models and their rules (SPEC §7, Prefect P§5.1, §5.10, §5.12, §6.1, §6.3) and
action templates (P§6.6): validation errors name the field, Prefect's JSON loads as is, and
templates render in a sandbox with Prefect's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from collector.automations.evaluator import Evaluator
from collector.automations.template_context import LabelDiver, build_context
from collector.automations.templates import (
    TemplateEngine,
    render_template,
    validate_automation_templates,
    validate_template,
)
from collector.clock import ManualClock
from collector.domain.automations import (
    Automation,
    CallWebhook,
    parse_automation,
    parse_trigger,
)
from collector.domain.events import ReceivedEvent
from collector.domain.triggers import (
    CompoundTrigger,
    EventTrigger,
    SequenceTrigger,
    default_trigger_for_event,
    describe_trigger,
)
from collector.errors import InvalidAutomation

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

# As `prefect automation inspect --json` prints it (read shape: ids and timestamps included).
PREFECT_JSON: dict[str, Any] = {
    "id": "6a1c3f0e-3d4e-4a56-9a0f-1c2b3d4e5f60",
    "created": "2026-01-01T00:00:00Z",
    "updated": "2026-01-02T00:00:00Z",
    "name": "stuck orders",
    "description": "orders that are paid but never ship",
    "enabled": True,
    "tags": ["orders"],
    "trigger": {
        "type": "event",
        "id": "0f0e0d0c-0b0a-4908-8706-050403020100",
        "match": {"prefect.resource.id": "app.order.*"},
        "match_related": {},
        "after": ["app.order.paid"],
        "expect": ["app.order.shipped"],
        "for_each": ["prefect.resource.id"],
        "posture": "Proactive",
        "threshold": 1,
        "within": 3600.0,
    },
    "actions": [{"type": "do-nothing"}],
    "actions_on_trigger": [],
    "actions_on_resolve": [],
    "owner_resource": None,
}


def with_trigger(trigger: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "x", "trigger": trigger, "actions": [], **extra}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidAutomation) as info:
        parse_automation(data)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Prefect's JSON shape


def test_prefect_automation_json_loads_as_is_and_round_trips() -> None:
    automation = parse_automation(PREFECT_JSON)
    assert str(automation.id) == PREFECT_JSON["id"]
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.within == timedelta(hours=1)
    dumped = automation.model_dump(mode="json")
    assert dumped["trigger"] == PREFECT_JSON["trigger"]
    assert list(dumped["trigger"]) == list(PREFECT_JSON["trigger"])  # Prefect's key order
    assert parse_automation(dumped) == automation


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"expect": ["a"]}, EventTrigger),
        ({"triggers": [{"expect": ["a"]}], "require": "any"}, CompoundTrigger),
        ({"triggers": [{"expect": ["a"]}]}, SequenceTrigger),
        ({"type": "sequence", "triggers": [{"expect": ["a"]}], "within": None}, SequenceTrigger),
    ],
)
def test_trigger_type_is_inferred_like_prefect_client(data: dict[str, Any], kind: type) -> None:
    assert isinstance(parse_trigger(data), kind)


@pytest.mark.parametrize(
    ("within", "seconds"),
    [
        (30, 30),
        (30.5, 30.5),
        ("30", 30),
        ("PT30S", 30),
        ("PT1H", 3600),
        ("00:05:00", 300),
        ("1 day, 00:00:30", 86430),
    ],
)
def test_within_accepts_prefect_timedelta_forms(within: Any, seconds: float) -> None:
    trigger = parse_trigger({"within": within})
    assert trigger.within == timedelta(seconds=seconds)
    assert trigger.model_dump(mode="json")["within"] == seconds


def test_proactive_within_defaults_to_10_seconds() -> None:
    for data in ({"posture": "Proactive"}, {"posture": "Proactive", "within": 0}):
        assert parse_trigger(data).within == timedelta(seconds=10)


def test_reactive_defaults() -> None:
    trigger = parse_trigger({})
    assert isinstance(trigger, EventTrigger)
    assert (trigger.posture, trigger.threshold, trigger.within) == ("Reactive", 1, timedelta(0))
    assert trigger.immediate


def test_sets_are_deduplicated_and_sorted() -> None:
    trigger = parse_trigger({"expect": ["b", "a", "b"], "for_each": ["z", "a"]})
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == ["a", "b"]
    assert trigger.for_each == ["a", "z"]


# --------------------------------------------------------------------------------------------
# Validation errors name the field

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("proactive within under 10 s",
     with_trigger({"posture": "Proactive", "within": 5}),
     "trigger.within: `within` for Proactive triggers must be greater than or equal to 10"),
    ("negative within", with_trigger({"within": -1}),
     "trigger.within: must be greater than or equal to 0"),
    ("null within", with_trigger({"within": None}), "trigger.within: should be a valid timedelta"),
    ("garbage within", with_trigger({"within": "soon"}),
     "trigger.within: should be a valid timedelta"),
    ("negative threshold", with_trigger({"threshold": -1}),
     "trigger.threshold: must be greater than or equal to 0"),
    ("unknown posture", with_trigger({"posture": "Eager"}), "trigger.posture:"),
    ("metric trigger", with_trigger({"posture": "Metric"}),
     "trigger.type: metric triggers are not supported"),
    ("unknown trigger type", with_trigger({"type": "cron"}), "trigger.type: unknown type 'cron'"),
    ("typo in a trigger field", with_trigger({"threshhold": 2}),
     "trigger.threshhold: unknown field"),
    ("bad related for_each", with_trigger({"for_each": ["related:flow"]}),
     "trigger.for_each: 'related:flow' should have the form related:<role>:<label>"),
    ("empty expect pattern", with_trigger({"expect": [""]}), "trigger.expect:"),
    ("match value not a string", with_trigger({"match": {"a": 1}}), "trigger.match.a"),
    ("require above the number of triggers",
     with_trigger({"type": "compound", "require": 3, "triggers": [{}, {}]}),
     "trigger.require: must be between 1 and the number of triggers (2), got 3"),
    ("require 0", with_trigger({"type": "compound", "require": 0, "triggers": [{}]}),
     "trigger.require: must be between 1"),
    ("require word", with_trigger({"type": "compound", "require": "most", "triggers": [{}]}),
     "trigger.require"),
    ("compound without children", with_trigger({"type": "compound", "require": "any",
                                                "triggers": []}),
     "trigger.triggers: a compound trigger needs at least one child trigger"),
    ("negative composite within",
     with_trigger({"type": "sequence", "triggers": [{}], "within": -5}),
     "trigger.within: must be greater than or equal to 0"),
    ("error deep in a nested trigger",
     with_trigger({"type": "compound", "require": "all", "triggers": [
         {}, {"type": "sequence", "triggers": [{"posture": "Proactive", "within": 3}]}]}),
     "trigger.triggers[1].triggers[0].within: `within` for Proactive"),
    ("missing name", {"trigger": {}, "actions": []}, "name: required"),
    ("empty name", {"name": " ", "trigger": {}, "actions": []}, "name: must not be empty"),
    ("missing actions", {"name": "x", "trigger": {}}, "actions: required"),
    ("unknown top-level field", with_trigger({}, colour="red"), "colour: unknown field"),
    ("unknown action type", with_trigger({}, actions=[{"type": "launch-rocket"}]),
     "actions[0].type: unknown type 'launch-rocket'"),
    ("Prefect action type", with_trigger({}, actions=[{"type": "run-deployment"}]),
     "actions[0].type: 'run-deployment' is a Prefect action type that Herald does not have"),
    ("action without type", with_trigger({}, actions=[{"url": "x"}]), "actions[0].type: required"),
    ("selected without automation_id",
     with_trigger({}, actions=[{"type": "do-nothing"}, {"type": "pause-automation"}]),
     "actions[1].automation_id: required when source is 'selected'"),
    ("inferred with automation_id",
     with_trigger({}, actions_on_trigger=[{"type": "resume-automation", "source": "inferred",
                                           "automation_id": str(uuid4())}]),
     "actions_on_trigger[0].automation_id: not allowed when source is 'inferred'"),
    ("webhook url scheme", with_trigger({}, actions=[{"type": "call-webhook", "url": "ftp://x"}]),
     "actions[0].url: must start with http:// or https://"),
    ("webhook method", with_trigger({}, actions=[{"type": "call-webhook", "url": "https://x",
                                                  "method": "BREW"}]),
     "actions[0].method"),
    ("webhook timeout", with_trigger({}, actions=[{"type": "call-webhook", "url": "https://x",
                                                   "timeout_seconds": 0}]),
     "actions[0].timeout_seconds"),
    ("emit-event without a resource id",
     with_trigger({}, actions=[{"type": "emit-event", "event": "x", "resource": {"a": "b"}}]),
     "actions[0].resource: must include a non-empty prefect.resource.id label"),
    ("emit-event related without a role",
     with_trigger({}, actions=[{"type": "emit-event", "event": "x",
                                "resource": {"prefect.resource.id": "r"},
                                "related": [{"prefect.resource.id": "q"}]}]),
     "actions[0].related: item 0 must include"),
    ("emit-event event name empty",
     with_trigger({}, actions=[{"type": "emit-event", "event": "",
                                "resource": {"prefect.resource.id": "r"}}]),
     "actions[0].event"),
    ("run-command without argv", with_trigger({}, actions_on_resolve=[{"type": "run-command",
                                                                        "argv": []}]),
     "actions_on_resolve[0].argv"),
    ("run-command with an empty program",
     with_trigger({}, actions=[{"type": "run-command", "argv": [" ", "x"]}]),
     "actions[0].argv: the program (argv[0]) must be non-empty"),
]


@pytest.mark.parametrize(
    ("data", "message"), [pytest.param(d, m, id=n) for n, d, m in INVALID]
)
def test_invalid_automations_name_the_field(data: dict[str, Any], message: str) -> None:
    assert error_of(data).startswith(message)


# --------------------------------------------------------------------------------------------
# Actions


def test_every_action_type_validates() -> None:
    automation = parse_automation(with_trigger({}, actions=[
        {"type": "do-nothing"},
        {"type": "call-webhook", "url": "https://hooks.example/{{ automation.name }}",
         "method": "put", "headers": {"X-Order": "{{ event.resource.id }}"},
         "body": {"order": "{{ event.resource.id }}"}},
        {"type": "emit-event", "event": "app.alert.{{ event.event }}",
         "resource": {"prefect.resource.id": "app.alert.{{ event.resource.id }}"},
         "related": [{"prefect.resource.id": "x", "prefect.resource.role": "source"}],
         "payload": {"why": "{{ labels.region }}", "n": 3, "list": ["{{ event.id }}"]}},
        {"type": "pause-automation", "automation_id": str(uuid4())},
        {"type": "resume-automation", "source": "inferred"},
        {"type": "run-command", "argv": ["notify-send", "{{ event.event }}"]},
    ]))
    webhook = automation.actions[1]
    assert isinstance(webhook, CallWebhook)
    assert webhook.method == "PUT"
    assert webhook.body is not None
    assert json.loads(webhook.body) == {"order": "{{ event.resource.id }}"}
    assert [where for where, _ in automation.templates()] == [
        "actions[1].url",
        "actions[1].headers.X-Order",
        "actions[1].body",
        "actions[2].event",
        "actions[2].resource.prefect.resource.id",
        "actions[2].related[0].prefect.resource.id",
        "actions[2].related[0].prefect.resource.role",
        "actions[2].payload.why",
        "actions[2].payload.list[0]",
        "actions[5].argv[0]",
        "actions[5].argv[1]",
    ]


# --------------------------------------------------------------------------------------------
# Default trigger and descriptions


def event(name: str = "app.order.shipped", **over: Any) -> ReceivedEvent:
    data: dict[str, Any] = {
        "occurred": T0,
        "event": name,
        "resource": {"prefect.resource.id": "app.order.8812", "prefect.resource.name": "Order",
                     "region": "eu", "prefect.hello.world": "hi",
                     "prefect.hello.world.again": "again"},
        "related": [{"prefect.resource.id": "app.customer.17",
                     "prefect.resource.role": "customer"}],
        "payload": {"carrier": "DHL", "items": [1, 2]},
        "id": uuid4(),
        "received": T0,
    }
    data.update(over)
    return ReceivedEvent.model_validate(data)


def test_default_trigger_for_event_is_prefects_ui_default() -> None:
    trigger = default_trigger_for_event(event())
    assert trigger.model_dump(mode="json", exclude={"id"}) == {
        "type": "event", "match": {"prefect.resource.id": "app.order.8812"}, "match_related": {},
        "after": [], "expect": ["app.order.shipped"], "for_each": [], "posture": "Reactive",
        "threshold": 1, "within": 0.0,
    }


def test_default_trigger_fires_on_every_such_event_of_that_resource() -> None:
    automation = Automation(name="x", trigger=default_trigger_for_event(event()), actions=[])
    evaluator = Evaluator(ManualClock(T0))
    evaluator.load([automation])
    assert len(evaluator.on_event(event())) == 1
    assert len(evaluator.on_event(event())) == 1
    assert evaluator.on_event(event("app.order.paid")) == []
    other = event(resource={"prefect.resource.id": "app.order.1"})
    assert evaluator.on_event(other) == []


DESCRIPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"expect": ["app.order.shipped"]}, "Reactive: expecting 1 of app.order.shipped"),
    ({"expect": ["b", "a"], "threshold": 3, "within": 60},
     "Reactive: expecting 3 of a, b within 0:01:00"),
    ({}, "Reactive: expecting 1 of any event"),
    ({"posture": "Proactive", "expect": ["app.order.shipped"], "after": ["app.order.paid"],
      "for_each": ["prefect.resource.id"], "within": 3600},
     "Proactive: expecting 1 app.order.shipped event within 1:00:00 after app.order.paid "
     "for each prefect.resource.id"),
    ({"type": "compound", "require": "any", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
     "Any of:\n  Reactive: expecting 1 of a\n  Reactive: expecting 1 of b"),
    ({"type": "compound", "require": 2, "within": 300, "triggers": [
        {"expect": ["a"]}, {"type": "sequence", "triggers": [{"expect": ["b"]},
                                                             {"expect": ["c"]}]}]},
     "2 of (within 0:05:00):\n  Reactive: expecting 1 of a\n  In this order:\n"
     "    Reactive: expecting 1 of b\n    Reactive: expecting 1 of c"),
]


@pytest.mark.parametrize(("trigger", "text"), DESCRIPTIONS)
def test_describe_trigger(trigger: dict[str, Any], text: str) -> None:
    assert describe_trigger(parse_trigger(trigger)) == text


# --------------------------------------------------------------------------------------------
# Templates: validated on save


INVALID_TEMPLATES: list[tuple[str, str]] = [
    ("{{ event.id ", "template syntax error on line 1"),
    ("line one\n{% if x %}", "template syntax error on line 2"),
    ("{% for i in x %}{% endfor %}" * 11, "11 for loops; at most 10 are allowed"),
    ("{% for a in x %}{% for b in a %}{% for c in b %}{% endfor %}{% endfor %}{% endfor %}",
     "nests for loops 3 deep; at most 2 levels are allowed"),
]


@pytest.mark.parametrize(("text", "message"), INVALID_TEMPLATES)
def test_invalid_templates(text: str, message: str) -> None:
    with pytest.raises(InvalidAutomation, match=r"^actions\[0\]\.body: ") as info:
        validate_template(text, "actions[0].body")
    assert message in str(info.value)


def test_valid_templates_pass() -> None:
    validate_template("plain text, no template")
    validate_template("{% for k, v in event.resource %}{% for x in v %}{% endfor %}{% endfor %}")


def test_automation_templates_are_validated_with_the_field_named() -> None:
    automation = parse_automation(with_trigger({}, actions=[
        {"type": "do-nothing"},
        {"type": "call-webhook", "url": "https://x", "body": "{{ oops"},
    ]))
    with pytest.raises(InvalidAutomation, match=r"^actions\[1\]\.body: template syntax error"):
        validate_automation_templates(automation)


# --------------------------------------------------------------------------------------------
# Templates: rendering


@pytest.fixture
def context() -> dict[str, Any]:
    automation = parse_automation(with_trigger(
        {"expect": ["app.order.shipped"], "for_each": ["prefect.resource.id", "region"]},
        name="ship it",
    ))
    evaluator = Evaluator(ManualClock(T0))
    evaluator.load([automation])
    (firing,) = evaluator.on_event(event())
    return build_context(automation, firing)


RENDERED: list[tuple[str, str]] = [
    ("{{ automation.name }}", "ship it"),
    ("{{ event.event }} {{ event.resource.id }} {{ event.resource.name }}",
     "app.order.shipped app.order.8812 Order"),
    ("{{ event.resource['region'] }}", "eu"),
    ("{{ event.resource.labels.region }}", "eu"),
    ("{{ event.resource.labels.prefect.resource.id }}", "app.order.8812"),
    ("{{ event.resource.labels.prefect.hello.world }}", "hi"),
    ("{{ event.resource.labels.prefect.hello.world.again }}", "again"),
    ("{{ event.related[0].role }}:{{ event.resource_in_role.customer.id }}",
     "customer:app.customer.17"),
    ("{{ event.payload.carrier }} {{ event.payload['items'] | length }}", "DHL 2"),
    ("{{ labels.region }} {{ labels['prefect.resource.id'] }} {{ labels.prefect.resource.id }}",
     "eu app.order.8812 app.order.8812"),
    ("{% if labels.region == 'eu' %}yes{% endif %}", "yes"),
    ("{% for k, v in event.resource %}{% if k == 'region' %}{{ k }}={{ v }}{% endif %}"
     "{% endfor %}", "region=eu"),
    ("{{ firing.kind }} {{ firing.triggering_labels.region }}", "triggered eu"),
    ("{{ event.payload | tojson }}", '{"carrier": "DHL", "items": [1, 2]}'),
    ("{{ event.occurred | tojson }}", '"2026-11-24T10:00:00.000000Z"'),
    ("{{ event.nothing.here }}|{{ nope.nope }}", "|"),  # ChainableUndefined, like Prefect
    ("{{ range(3) | list | length }}", "3"),
    ("{{ events | length }} {{ firings | length }}", "1 1"),
    ("{{ event.__class__.__mro__ }}{{ automation.__class__ }}", ""),  # unsafe: undefined
]


@pytest.mark.parametrize(("text", "expected"), RENDERED)
def test_render(text: str, expected: str, context: dict[str, Any]) -> None:
    assert render_template(text, context) == expected


SANDBOXED: list[tuple[str, str]] = [
    ("{{ range(101) | list }}", "range() is limited to 100 items"),
    ("{{ 'x' * 1000000 }}", "repetition is limited"),
    ("{{ 2 ** 1000 }}", "exponents are limited"),
    ("{{ event.payload.update({'a': 1}) }}", "SecurityError"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
]


@pytest.mark.parametrize(("text", "message"), SANDBOXED)
def test_sandbox(text: str, message: str, context: dict[str, Any]) -> None:
    with pytest.raises(InvalidAutomation, match=r"^actions\[0\]\.body: template rendering failed"
                       ) as info:
        render_template(text, context, "actions[0].body")
    assert message in str(info.value)


def test_render_value_renders_every_string(context: dict[str, Any]) -> None:
    engine = TemplateEngine()
    value = {"a": "{{ labels.region }}", "b": [1, "{{ event.event }}"], "c": None}
    assert engine.render_value(value, context, "payload") == {
        "a": "eu", "b": [1, "app.order.shipped"], "c": None,
    }
    with pytest.raises(InvalidAutomation, match=r"^payload\.b\[1\]: "):
        engine.render_value({"b": [1, "{{ 1/0 }}"]}, context, "payload")


def test_actions_on_trigger_see_the_automation_event(context: dict[str, Any]) -> None:
    automation = parse_automation(with_trigger({}))
    triggered = event("herald.automation.triggered")
    ctx = build_context(automation, None, triggered)
    assert render_template("{{ event.event }}|{{ labels }}|{{ firing }}", ctx) == (
        "herald.automation.triggered|{}|None"
    )


def test_composite_firings_expose_every_firing_and_event() -> None:
    automation = parse_automation(with_trigger(
        {"type": "compound", "require": "all",
         "triggers": [{"expect": ["app.order.shipped"]}, {"expect": ["app.order.paid"]}]},
    ))
    evaluator = Evaluator(ManualClock(T0))
    evaluator.load([automation])
    evaluator.on_event(event("app.order.paid"))
    (firing,) = evaluator.on_event(event(occurred=T0 + timedelta(seconds=1)))
    ctx = build_context(automation, firing)
    text = (
        "{{ firings | length }} {% for e in events %}{{ e.event }} {% endfor %}"
        "{{ firing.firings[0].trigger_path }}"
    )
    assert render_template(text, ctx) == (
        "3 app.order.paid app.order.shipped trigger.triggers[1]"
    )


def test_label_diver() -> None:
    diver = LabelDiver({"hello.world": "hi", "hello.world.again": "again", "solo": "s"})
    assert str(diver.hello.world) == "hi"
    assert diver.hello.world.again == "again"
    assert diver.solo == "s"
    assert diver["hello.world"] == "hi"
    with pytest.raises(AttributeError):
        _ = diver.missing
