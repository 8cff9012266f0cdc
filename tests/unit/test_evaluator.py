"""Trigger semantics (SPEC §7, Prefect P§5.2–5.10) as tables of scenarios on a ManualClock.

Each scenario is a list of steps — an event (``E``) delivered at a wall time, or a ``Tick`` —
and the firings expected, written as ``(kind, seconds after T0 the firing occurred)`` or with
the triggering event's label. Events are delivered in real time unless a step says
``delivered=``; the ManualClock is moved to the delivery time before each step.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from collector.automations.evaluator import Evaluator
from collector.clock import ManualClock
from collector.domain.automation_records import Firing
from collector.domain.automations import Automation, parse_automation
from collector.domain.events import ReceivedEvent

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
R1 = "app.order.1"
R2 = "app.order.2"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class E:
    """An event occurring at ``t`` seconds after T0 (delivered at ``delivered``, default t)."""

    t: float
    name: str = "a"
    rid: str = R1
    labels: dict[str, str] = field(default_factory=dict)
    related: list[dict[str, str]] = field(default_factory=list)
    delivered: float | None = None
    tag: str | None = None  # a name for the event, to assert on
    id: UUID = field(default_factory=uuid4)
    follows: UUID | None = None

    def event(self, received: datetime) -> ReceivedEvent:
        return ReceivedEvent(
            occurred=at(self.t),
            event=self.name,
            resource={"prefect.resource.id": self.rid, **self.labels},
            related=self.related,
            payload={"tag": self.tag} if self.tag else {},
            id=self.id,
            follows=self.follows,
            received=received,
        )


@dataclass
class Tick:
    t: float


def automation(trigger: dict[str, Any], **extra: Any) -> Automation:
    return parse_automation(
        {"name": "test", "trigger": trigger, "actions": [{"type": "do-nothing"}], **extra}
    )


class Run:
    """An evaluator with a ManualClock and the firings it produced so far."""

    def __init__(self, *automations: Automation, start: datetime = T0) -> None:
        self.clock = ManualClock(start)
        self.evaluator = Evaluator(self.clock)
        if automations:  # a restored evaluator loads after restore()
            self.evaluator.load(automations)
        self.firings: list[Firing] = []

    def _move_to(self, when: datetime) -> None:
        if when > self.clock.now():
            self.clock.set(when)

    def step(self, step: E | Tick) -> list[Firing]:
        if isinstance(step, Tick):
            self._move_to(at(step.t))
            out = self.evaluator.tick(self.clock.now())
        else:
            self._move_to(at(step.delivered if step.delivered is not None else step.t))
            out = self.evaluator.on_event(step.event(self.clock.now()))
        self.firings += out
        return out

    def steps(self, steps: Sequence[E | Tick]) -> list[Firing]:
        for s in steps:
            self.step(s)
        return self.firings


def summary(firings: list[Firing]) -> list[tuple[str, float]]:
    return [(f.kind, (f.occurred - T0).total_seconds()) for f in firings]


def triggered_at(*seconds: float) -> list[tuple[str, float]]:
    return [("triggered", s) for s in seconds]


def tags(firings: list[Firing]) -> list[str | None]:
    return [f.triggering_event.payload.get("tag") if f.triggering_event else None for f in firings]


# --------------------------------------------------------------------------------------------
# Reactive triggers (P§5.3)

REACTIVE: list[tuple[str, dict[str, Any], list[E | Tick], list[tuple[str, float]]]] = [
    (
        "immediate: every matching event fires, others are ignored",
        {"expect": ["a"]},
        [E(0), E(1), E(2, "b"), E(3)],
        triggered_at(0, 1, 3),
    ),
    (
        "immediate with glob expect",
        {"expect": ["app.order.*"]},
        [E(0, "app.order.shipped"), E(1, "app.user.created"), E(2, "app.order.paid")],
        triggered_at(0, 2),
    ),
    (
        "empty expect matches every event name",
        {},
        [E(0, "x"), E(1, "y")],
        triggered_at(0, 1),
    ),
    (
        "threshold 3 within 60 fires as soon as it can, then waits for the next window",
        {"expect": ["a"], "threshold": 3, "within": 60},
        # window [-900, 60): fires at 20; next window [60, 120): 30 is before it, ignored
        [E(0), E(10), E(20), E(30), E(70), E(80), E(90)],
        triggered_at(20, 90),
    ),
    (
        "an event after the window opens a new window at itself and is counted",
        {"expect": ["a"], "threshold": 2, "within": 30},
        [E(0), E(40), E(50)],
        triggered_at(50),
    ),
    (
        "an event from the future fires a threshold-1 trigger (Prefect #15343)",
        {"expect": ["a"], "within": 60},
        [E(0), E(30), E(200)],
        triggered_at(0, 200),
    ),
    (
        "a late event within the first window's 15-minute lookback still counts",
        {"expect": ["a"], "threshold": 2, "within": 60},
        [E(100), E(50, delivered=101)],
        triggered_at(50),
    ),
    (
        "a late event before the current window is ignored",
        {"expect": ["a"], "threshold": 1, "within": 60},
        # fires at 0, next window [60, 120): the late event at 30 falls before it
        [E(0), E(30, delivered=100), E(70)],
        triggered_at(0, 70),
    ),
    (
        "threshold 2, within 0: immediate counting across any gap until the bucket is swept",
        {"expect": ["a"], "threshold": 2},
        [E(0), E(30), E(40), E(45)],
        triggered_at(30, 45),
    ),
    (
        "after arms, expect fires within the window, firing disarms",
        {"after": ["start"], "expect": ["a"], "within": 60},
        [E(0), E(10, "start"), E(20), E(30), E(100, "start"), E(200)],
        triggered_at(20),
    ),
    (
        "after with within 0: the expected event counts whenever it comes (before the sweep)",
        {"after": ["start"], "expect": ["a"]},
        [E(0, "start"), E(30)],
        triggered_at(30),
    ),
    (
        "after with within 0: the arming bucket is swept ~60 s after it (events clock)",
        {"after": ["start"], "expect": ["a"]},
        [E(0, "start"), Tick(100), E(110)],
        [],
    ),
    (
        "same event in after and expect, within 0: never fires",
        {"after": ["a"], "expect": ["a"]},
        [E(0), E(1), E(2), E(3)],
        [],
    ),
    (
        "same event in after and expect, within 60: fires on the second, then needs two more",
        {"after": ["a"], "expect": ["a"], "within": 60},
        [E(0), E(10), E(20), E(30), E(40)],
        triggered_at(10, 30),
    ),
    (
        "threshold 0 with after and an empty expect fires on each arming event",
        {"after": ["pending"], "expect": [], "threshold": 0, "for_each": ["prefect.resource.id"]},
        [E(0, "pending", R1), E(1, "pending", R2), E(2, "pending", "app.order.3")],
        triggered_at(0, 1, 2),
    ),
]


@pytest.mark.parametrize(
    ("trigger", "steps", "expected"),
    [pytest.param(t, s, x, id=name) for name, t, s, x in REACTIVE],
)
def test_reactive(
    trigger: dict[str, Any], steps: list[E | Tick], expected: list[tuple[str, float]]
) -> None:
    run = Run(automation({"posture": "Reactive", **trigger}))
    assert summary(run.steps(steps)) == expected


def test_reactive_firing_carries_event_labels_and_ids() -> None:
    a = automation({"expect": ["a"], "for_each": ["prefect.resource.id", "region"]})
    run = Run(a)
    (firing,) = run.step(E(5, labels={"region": "eu"}, tag="first"))
    assert firing.automation_id == a.id
    assert firing.trigger_id == a.trigger.id
    assert firing.trigger_path == "trigger"
    assert firing.bucket_key == (R1, "eu")
    assert firing.triggering_labels == {"prefect.resource.id": R1, "region": "eu"}
    assert tags([firing]) == ["first"]
    assert firing.occurred == at(5)


def test_rapid_fire_events_all_fire() -> None:
    # Prefect's test_rapid_fire_events: 50 shuffled events, 50 firings.
    run = Run(automation({"expect": ["a"]}))
    steps = [E(t, delivered=60) for t in (37, 3, 12, 48, 0, 25, *range(100, 144))]
    assert len(run.steps(steps)) == 50


def test_for_each_keeps_a_bucket_per_key() -> None:
    trigger = {"expect": ["a"], "threshold": 2, "within": 60, "for_each": ["prefect.resource.id"]}
    run = Run(automation(trigger))
    run.steps([E(0, rid=R1), E(1, rid=R2), E(2, rid=R1, tag="r1"), E(3, rid=R2, tag="r2")])
    assert [f.bucket_key for f in run.firings] == [(R1,), (R2,)]
    assert tags(run.firings) == ["r1", "r2"]


# --------------------------------------------------------------------------------------------
# Matching: match, match_related (lists = AND), for_each on related labels

CUSTOMER = {"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}
REGION = {"prefect.resource.id": "geo.eu", "prefect.resource.role": "region", "zone": "west"}

MATCHING: list[tuple[str, dict[str, Any], E, bool]] = [
    ("match glob", {"match": {"prefect.resource.id": "app.order.*"}}, E(0), True),
    ("match glob, other", {"match": {"prefect.resource.id": "app.user.*"}}, E(0), False),
    ("match ? glob", {"match": {"prefect.resource.id": "app.order.?"}}, E(0), True),
    ("negation", {"match": {"region": "!eu"}}, E(0, labels={"region": "us"}), True),
    ("negation excludes", {"match": {"region": "!eu"}}, E(0, labels={"region": "eu"}), False),
    ("negation needs the label", {"match": {"region": "!eu"}}, E(0), False),
    ("list values are ORed", {"match": {"region": ["us", "eu"]}}, E(0, labels={"region": "eu"}),
     True),
    ("empty list matches nothing", {"match": {"region": []}}, E(0, labels={"region": "eu"}),
     False),
    ("labels are ANDed", {"match": {"region": "eu", "tier": "gold"}},
     E(0, labels={"region": "eu"}), False),
    ("empty match_related matches no related", {"match_related": {}}, E(0), True),
    ("match_related by role and id",
     {"match_related": {"prefect.resource.role": "customer",
                        "prefect.resource.id": "app.customer.*"}},
     E(0, related=[CUSTOMER]), True),
    ("match_related needs a related resource",
     {"match_related": {"prefect.resource.role": "customer"}}, E(0), False),
    ("match_related list: all specs, by different resources",
     {"match_related": [{"prefect.resource.role": "customer"}, {"zone": "west"}]},
     E(0, related=[CUSTOMER, REGION]), True),
    ("match_related list: one spec unmet",
     {"match_related": [{"prefect.resource.role": "customer"}, {"zone": "east"}]},
     E(0, related=[CUSTOMER, REGION]), False),
    ("one spec is satisfied by a single resource",
     {"match_related": {"prefect.resource.role": "customer", "zone": "west"}},
     E(0, related=[CUSTOMER, REGION]), False),
]


@pytest.mark.parametrize(
    ("trigger", "event", "fires"), [pytest.param(t, e, f, id=n) for n, t, e, f in MATCHING]
)
def test_matching(trigger: dict[str, Any], event: E, fires: bool) -> None:
    run = Run(automation({"expect": ["a"], **trigger}))
    assert bool(run.step(event)) is fires


def test_for_each_on_a_related_label() -> None:
    other = {**CUSTOMER, "prefect.resource.id": "app.customer.18"}
    trigger = {
        "expect": ["a"],
        "threshold": 2,
        "within": 60,
        "for_each": ["related:customer:prefect.resource.id"],
    }
    run = Run(automation(trigger))
    run.steps([E(0, related=[CUSTOMER]), E(1, related=[other]), E(2, rid=R2, related=[CUSTOMER])])
    assert [f.triggering_labels for f in run.firings] == [
        {"related:customer:prefect.resource.id": "app.customer.17"}
    ]


def test_for_each_related_label_falls_back_to_the_literal_primary_label() -> None:
    # Prefect: with no related resource in the role, the primary's literal label is used.
    label = "related:customer:prefect.resource.id"
    trigger = {"expect": ["a"], "threshold": 2, "within": 60, "for_each": [label]}
    run = Run(automation(trigger))
    run.steps([E(0, labels={label: "x"}), E(1, labels={label: "y"}), E(2, labels={label: "x"})])
    assert [f.bucket_key for f in run.firings] == [("x",)]


# --------------------------------------------------------------------------------------------
# Proactive triggers (P§5.4–5.6) and resolution (divergence 4)

HEARTBEAT = {
    "posture": "Proactive",
    "after": ["hb"],
    "expect": ["hb"],
    "for_each": ["prefect.resource.id"],
    "within": 30,
}

PROACTIVE: list[tuple[str, dict[str, Any], list[E | Tick], list[tuple[str, float]]]] = [
    (
        "no events: fires once per window, on the window's end (Prefect test)",
        {"expect": ["a"], "within": 30},
        [Tick(0), Tick(9), Tick(10), Tick(30), Tick(31), Tick(59), Tick(60)],
        triggered_at(30, 60),
    ),
    (
        "an expected event in the window prevents the firing",
        {"expect": ["a"], "within": 30},
        [Tick(0), E(15), Tick(30), Tick(31), Tick(60), Tick(61)],
        triggered_at(61),
    ),
    (
        "fired, then the expected event resolves it",
        {"expect": ["a"], "within": 30},
        [Tick(0), Tick(30), E(40), Tick(60), Tick(61)],
        [("triggered", 30), ("resolved", 40)],
    ),
    (
        "threshold 2: one event is not enough",
        {"expect": ["a"], "within": 30, "threshold": 2},
        [Tick(0), E(10), Tick(30)],
        triggered_at(30),
    ),
    (
        "stuck in running: after arms per key, the expected event disarms",
        {"after": ["running"], "expect": ["completed"], "for_each": ["prefect.resource.id"],
         "within": 60},
        [E(0, "running", R1), E(10, "running", R2), E(30, "completed", R1), Tick(65),
         Tick(70), E(80, "completed", R2), Tick(200)],
        [("triggered", 70), ("resolved", 80)],
    ),
    (
        "after-armed without for_each is armed only by after events (divergence 2)",
        {"after": ["start"], "expect": ["done"], "within": 30},
        [Tick(0), Tick(40), Tick(100), E(110, "start"), Tick(139), Tick(140), Tick(200)],
        triggered_at(140),
    ),
    (
        "heartbeats slide the window; fires `within` after the last one; the next resolves",
        HEARTBEAT,
        [E(0, "hb"), E(10, "hb"), E(20, "hb"), Tick(45), Tick(50), Tick(55), E(60, "hb"),
         Tick(89), Tick(90)],
        [("triggered", 50), ("resolved", 60), ("triggered", 90)],
    ),
    (
        "several states in after with a broad expect (Prefect #16563): restart, then resolve",
        {"after": ["pending", "running"], "expect": ["*"], "for_each": ["prefect.resource.id"],
         "within": 60},
        [E(0, "pending"), E(5, "running"), E(20, "completed"), Tick(70), Tick(200)],
        [],
    ),
    (
        "several states in after: fires `within` after the last listed state",
        {"after": ["pending", "running"], "expect": ["*"], "for_each": ["prefect.resource.id"],
         "within": 60},
        [E(0, "pending"), E(5, "running"), Tick(64), Tick(65)],
        triggered_at(65),
    ),
    (
        "same event in after and expect, threshold 2: below it, an event only counts "
        "(Prefect's `not meets_threshold`); the window opened by the first one fires",
        {"after": ["a"], "expect": ["a"], "threshold": 2, "within": 10},
        [E(1), E(3), Tick(10), Tick(11), Tick(13), Tick(30)],
        triggered_at(11),
    ),
    (
        "same event in after and expect, threshold 2: the event past it re-arms at itself",
        {"after": ["a"], "expect": ["a"], "threshold": 2, "within": 10},
        [E(1), E(2), E(3), Tick(11), Tick(12), Tick(13)],
        triggered_at(13),
    ),
    (
        "a window that ended before a late event's arrival fires in the event path",
        HEARTBEAT,
        [E(0, "hb"), E(100, "hb")],
        triggered_at(30),
    ),
]


@pytest.mark.parametrize(
    ("trigger", "steps", "expected"),
    [pytest.param(t, s, x, id=name) for name, t, s, x in PROACTIVE],
)
def test_proactive(
    trigger: dict[str, Any], steps: list[E | Tick], expected: list[tuple[str, float]]
) -> None:
    run = Run(automation({"posture": "Proactive", **trigger}))
    assert summary(run.steps(steps)) == expected


def test_heartbeat_firing_reports_the_last_heartbeat_and_its_key() -> None:
    run = Run(automation(HEARTBEAT))
    run.steps([
        E(0, "hb", R1, tag="r1-0"), E(5, "hb", R2, tag="r2-5"), E(20, "hb", R1, tag="r1-20"),
        Tick(40),
    ])
    assert summary(run.firings) == triggered_at(35)
    assert run.firings[0].bucket_key == (R2,)
    assert tags(run.firings) == ["r2-5"]
    run.steps([Tick(50)])
    assert run.firings[1].bucket_key == (R1,)
    assert tags(run.firings) == ["r2-5", "r1-20"]
    resolved = run.step(E(60, "hb", R2, tag="back"))
    assert [(f.kind, f.bucket_key, f.resolves) for f in resolved] == [
        ("resolved", (R2,), run.firings[0].id)
    ]


def test_resolution_is_per_key_and_once() -> None:
    run = Run(automation(HEARTBEAT))
    run.steps([E(0, "hb", R1), E(0, "hb", R2), Tick(30), E(40, "hb", R1), E(41, "hb", R1)])
    assert [(f.kind, f.bucket_key) for f in run.firings] == [
        ("triggered", (R1,)),
        ("triggered", (R2,)),
        ("resolved", (R1,)),
    ]


def test_a_firing_left_unresolved_for_7_days_no_longer_resolves() -> None:
    run = Run(automation(HEARTBEAT))
    week = 7 * 86400
    run.steps([E(0, "hb", R1), E(0, "hb", R2), Tick(30), Tick(week + 29)])
    run.steps([E(week + 29, "hb", R1), Tick(week + 31), E(week + 31, "hb", R2)])
    assert [(f.kind, f.bucket_key) for f in run.firings] == [
        ("triggered", (R1,)),
        ("triggered", (R2,)),
        ("resolved", (R1,)),
    ]


def test_events_clock_prevents_false_alarms_when_delivery_lags() -> None:
    # nebula#3803: the queue is 20 s behind; on wall time the window [0, 30) would be over at
    # wall 41 and fire, but on the events clock it is only 21.
    run = Run(automation({"posture": "Proactive", "expect": ["a"], "within": 30}))
    run.steps([Tick(0), E(20, "other", delivered=40), Tick(41)])
    assert run.firings == []
    assert run.evaluator.events_clock_offset() == timedelta(seconds=-20)
    run.steps([E(28, delivered=45), Tick(50), Tick(51)])
    assert run.firings == []


def test_events_clock_never_runs_into_the_future() -> None:
    run = Run(automation({"posture": "Proactive", "expect": ["a"], "within": 30}))
    run.steps([Tick(0), E(500, "other", delivered=10)])
    assert run.evaluator.events_clock_offset() == timedelta(0)
    run.steps([Tick(30)])
    assert summary(run.firings) == triggered_at(30)


def test_events_clock_offset_is_stable_between_events() -> None:
    run = Run(automation({"posture": "Proactive", "expect": ["a"], "within": 30}))
    run.steps([E(0, "other", delivered=5)])
    run.steps([Tick(100), Tick(1000)])
    assert run.evaluator.events_clock_offset() == timedelta(seconds=-5)


def test_next_due_is_the_earliest_window_end_in_wall_time() -> None:
    run = Run(automation({"posture": "Proactive", "expect": ["a"], "within": 30}))
    assert run.evaluator.next_due() == at(0)  # first window not open yet
    run.steps([Tick(0), E(1, "other", delivered=6)])  # offset -5 s
    assert run.evaluator.next_due() == at(35)
    assert Run().evaluator.next_due() is None


# --------------------------------------------------------------------------------------------
# Compound and sequence triggers (P§5.10, divergence 3)

A = {"expect": ["a"]}
B = {"expect": ["b"]}
C = {"expect": ["c"]}

COMPOSITE: list[tuple[str, dict[str, Any], list[E | Tick], list[tuple[str, float]]]] = [
    (
        "any: each child firing fires the parent",
        {"type": "compound", "require": "any", "triggers": [A, B], "within": 60},
        [E(0, "a"), E(1, "b"), E(500, "a")],
        triggered_at(0, 1, 500),
    ),
    (
        "all: both children within the window",
        {"type": "compound", "require": "all", "triggers": [A, B], "within": 60},
        [E(0, "a"), E(30, "b"), E(100, "a"), E(200, "b"), E(210, "a")],
        triggered_at(30, 210),
    ),
    (
        "all: a newer firing of the same child replaces the older one",
        {"type": "compound", "require": "all", "triggers": [A, B, C]},
        [E(0, "a"), E(10, "a"), E(20, "b"), E(30, "c"), E(40, "c")],
        triggered_at(30),
    ),
    (
        "2 of 3",
        {"type": "compound", "require": 2, "triggers": [A, B, C], "within": 60},
        [E(0, "c"), E(10, "a"), E(20, "b"), E(30, "b")],
        triggered_at(10),
    ),
    (
        "no within: any time apart",
        {"type": "compound", "require": "all", "triggers": [A, B], "within": None},
        [E(0, "a"), E(100000, "b")],
        triggered_at(100000),
    ),
    (
        "within compares occurred, not processing time (divergence 3)",
        {"type": "compound", "require": "all", "triggers": [A, B], "within": 300},
        [E(0, "a", delivered=840), E(840, "b")],
        [],
    ),
    (
        "sequence: in order",
        {"type": "sequence", "triggers": [A, B], "within": 60},
        [E(0, "a"), E(10, "b")],
        triggered_at(10),
    ),
    (
        "sequence: out of order waits for the order to be restored",
        {"type": "sequence", "triggers": [A, B], "within": 60},
        [E(0, "b"), E(10, "a"), E(20, "b")],
        triggered_at(20),
    ),
    (
        "sequence: order is by occurred even when delivered reversed",
        {"type": "sequence", "triggers": [A, B, C], "within": 60},
        [E(20, "c"), E(10, "b", delivered=21), E(0, "a", delivered=22)],
        triggered_at(20),
    ),
    (
        "sequence: events 14 minutes apart do not fire a 5-minute sequence (divergence 3)",
        {"type": "sequence", "triggers": [A, B], "within": 300},
        [E(0, "a", delivered=840), E(840, "b")],
        [],
    ),
    (
        "nested: all of [a, sequence(b, c)]",
        {"type": "compound", "require": "all", "within": 100,
         "triggers": [A, {"type": "sequence", "triggers": [B, C]}]},
        [E(0, "c"), E(10, "b"), E(20, "a"), E(30, "c")],
        triggered_at(30),
    ),
    (
        "a proactive child in a compound",
        {"type": "compound", "require": "all", "within": 60,
         "triggers": [A, {"posture": "Proactive", "expect": ["b"], "within": 30}]},
        [Tick(0), E(20, "a"), Tick(30)],
        triggered_at(30),
    ),
]


@pytest.mark.parametrize(
    ("trigger", "steps", "expected"),
    [pytest.param(t, s, x, id=name) for name, t, s, x in COMPOSITE],
)
def test_composite(
    trigger: dict[str, Any], steps: list[E | Tick], expected: list[tuple[str, float]]
) -> None:
    run = Run(automation(trigger))
    assert summary(run.steps(steps)) == expected


def test_composite_firing_carries_its_children_and_the_completing_event() -> None:
    a = automation({"type": "compound", "require": "all", "triggers": [A, B]})
    run = Run(a)
    run.steps([E(0, "a", tag="first"), E(5, "b", tag="second")])
    (firing,) = run.firings
    assert firing.trigger_path == "trigger"
    assert firing.trigger_id == a.trigger.id
    assert [c.trigger_path for c in firing.firings] == [
        "trigger.triggers[0]",
        "trigger.triggers[1]",
    ]
    assert tags([firing]) == ["second"]
    assert [e.payload["tag"] for e in firing.events] == ["first", "second"]


# --------------------------------------------------------------------------------------------
# Causal ordering with `follows` (P§5.9)


def test_a_follower_waits_for_its_leader() -> None:
    run = Run(automation({"expect": ["*"]}))
    leader, follower = E(0, "leader", tag="leader"), E(1, "follower", tag="follower")
    follower.follows = leader.id
    assert run.step(follower) == []
    assert tags(run.step(leader)) == ["leader", "follower"]


def test_followers_are_processed_in_order_whatever_the_arrival_order() -> None:
    chain = [E(i, f"e{i}", tag=f"e{i}") for i in range(5)]
    for prev, nxt in itertools.pairwise(chain):
        nxt.follows = prev.id
    for order in (chain, chain[::-1], [chain[2], chain[4], chain[0], chain[3], chain[1]]):
        run = Run(automation({"expect": ["*"]}))
        for e in order:
            run.step(E(e.t, e.name, tag=e.tag, id=e.id, follows=e.follows, delivered=10))
        assert tags(run.firings) == [f"e{i}" for i in range(5)]


def test_a_follower_of_a_seen_leader_is_processed_at_once() -> None:
    run = Run(automation({"expect": ["*"]}))
    leader = E(0, "leader")
    run.step(leader)
    assert len(run.step(E(1, "follower", follows=leader.id))) == 1


def test_a_lost_leader_releases_its_followers_after_15_minutes() -> None:
    run = Run(automation({"expect": ["*"]}))
    run.steps([E(1, "f1", follows=uuid4(), tag="f1"), E(0, "f0", follows=uuid4(), tag="f0")])
    run.steps([Tick(800)])
    assert run.firings == []
    assert run.evaluator.next_due() == at(901)  # both were received at 1
    run.steps([Tick(901)])
    assert tags(run.firings) == ["f0", "f1"]  # released in `occurred` order


def test_leader_processed_answers_for_leaders_no_longer_in_the_cache() -> None:
    processed = {uuid4()}
    clock = ManualClock(T0)
    evaluator = Evaluator(clock, leader_processed=lambda i: i in processed)
    evaluator.load([automation({"expect": ["*"]})])
    known = E(0, follows=next(iter(processed))).event(received=T0)
    unknown = E(0, follows=uuid4()).event(received=T0)
    assert len(evaluator.on_event(known)) == 1
    assert evaluator.on_event(unknown) == []


def test_a_stored_leader_still_waiting_for_its_own_leader_holds_its_followers() -> None:
    # A server answers `leader_processed` from its store: e2 is stored, but it is held for
    # e1, so e3 must wait behind it (Prefect: seen = processed, ordering/memory.py).
    chain = [E(i, f"e{i}", tag=f"e{i}") for i in range(1, 4)]
    for prev, nxt in itertools.pairwise(chain):
        nxt.follows = prev.id
    stored: set[UUID] = set()
    clock = ManualClock(at(10))
    evaluator = Evaluator(clock, leader_processed=stored.__contains__)
    evaluator.load([automation({"expect": ["*"]})])
    firings: list[Firing] = []
    for e in (chain[1], chain[2], chain[0]):
        stored.add(e.id)
        firings += evaluator.on_event(e.event(received=clock.now()))
    assert tags(firings) == ["e1", "e2", "e3"]


def test_several_automations_fire_in_load_order() -> None:
    exact = automation({"expect": ["a"]}, name="exact")
    glob = automation({"expect": ["*"]}, name="glob")
    negated = automation({"expect": ["!b"]}, name="negated")
    run = Run(glob, exact, negated)
    assert [f.automation_id for f in run.step(E(0, "a"))] == [glob.id, exact.id, negated.id]
    assert [f.automation_id for f in run.step(E(1, "b"))] == [glob.id]


def test_an_event_received_long_ago_does_not_wait() -> None:
    run = Run(automation({"expect": ["*"]}), start=at(2000))
    e = E(0, "old", follows=uuid4())
    assert len(run.evaluator.on_event(e.event(received=at(0)))) == 1


def test_a_repeated_event_is_ignored() -> None:
    run = Run(automation({"expect": ["a"]}))
    e = E(0)
    run.steps([e, e])
    assert len(run.firings) == 1


# --------------------------------------------------------------------------------------------
# Loading, updates and persistence (divergence 1)


def test_updating_with_an_unchanged_trigger_keeps_bucket_state() -> None:
    trigger = {"expect": ["a"], "threshold": 2, "within": 60}
    original = automation(trigger)
    run = Run(original)
    run.step(E(0))
    # Same trigger, new trigger id (Prefect regenerates them on every PUT), new name/actions.
    updated = automation(trigger, id=str(original.id), name="renamed")
    assert updated.trigger.id != original.trigger.id
    run.evaluator.load([updated])
    assert len(run.step(E(10))) == 1
    assert run.firings[0].trigger_id == updated.trigger.id


def test_updating_the_trigger_resets_its_state() -> None:
    original = automation({"expect": ["a"], "threshold": 2, "within": 60})
    run = Run(original)
    run.step(E(0))
    changed = automation({"expect": ["a"], "threshold": 2, "within": 61}, id=str(original.id))
    run.evaluator.load([changed])
    assert run.step(E(10)) == []
    assert len(run.step(E(20))) == 1


def test_disabled_automations_are_not_evaluated_and_lose_their_state() -> None:
    a = automation({"expect": ["a"], "threshold": 2, "within": 60})
    run = Run(a)
    run.step(E(0))
    run.evaluator.load([a.model_copy(update={"enabled": False})])
    assert run.step(E(1)) == []
    run.evaluator.load([a])
    assert run.step(E(2)) == []
    assert len(run.step(E(3))) == 1


def test_firing_ids_are_deterministic() -> None:
    a = automation({"expect": ["a"], "threshold": 2, "within": 60})
    steps: list[E | Tick] = [E(0), E(1), E(70), E(71)]
    first, second = Run(a), Run(a)
    assert [f.id for f in first.steps(steps)] == [f.id for f in second.steps(steps)]
    assert len({f.id for f in first.firings}) == 2


PERSISTED = [
    automation(
        {"expect": ["a"], "threshold": 3, "within": 100, "for_each": ["prefect.resource.id"]}
    ),
    automation(HEARTBEAT),
    automation({"posture": "Proactive", "expect": ["x"], "within": 40}),
    automation({"type": "sequence", "within": 300, "triggers": [
        {"expect": ["s1"]}, {"expect": ["s2"]}, {"expect": ["s3"]},
    ]}),
    automation({"type": "compound", "require": "all", "triggers": [
        {"expect": ["a"], "threshold": 2, "within": 50},
        {"posture": "Proactive", "after": ["b"], "expect": ["c"], "within": 20},
    ]}),
]
_LEADER = E(47, "s2", tag="leader")
PERSISTED_STEPS: list[E | Tick] = [
    Tick(0), E(1, "a", R1, tag="a1"), E(2, "hb", R1), E(3, "a", R2), E(5, "hb", R2),
    E(6, "b"), E(8, "s1"), E(10, "a", R1, tag="a10"), Tick(20), E(21, "x"), E(22, "hb", R1),
    Tick(30), E(31, "a", R2),
    E(33, "c"), E(35, "a", R1), Tick(40), E(41, "hb", R2), Tick(45),
    E(48, "s3", follows=_LEADER.id, tag="follower"), Tick(50), _LEADER, E(55, "b"),
    Tick(70), E(75, "hb", R1), E(76, "a", R1), E(77, "a", R1), Tick(90), E(95, "x"),
    E(96, "a", R2), E(97, "a", R2), Tick(120), E(130, "hb", R2), Tick(200), Tick(260),
]


@pytest.mark.parametrize("split", range(1, len(PERSISTED_STEPS)))
def test_snapshot_and_restore_mid_window_gives_the_same_firings(split: int) -> None:
    uninterrupted = Run(*PERSISTED)
    uninterrupted.steps(PERSISTED_STEPS)
    assert len(uninterrupted.firings) > 10  # the scenario exercises every kind of state

    before = Run(*PERSISTED)
    before.steps(PERSISTED_STEPS[:split])
    snapshot = json.loads(json.dumps(before.evaluator.state_snapshot()))
    # A new process: a new evaluator, restored, with the clock where the old one stopped.
    after = Run(start=before.clock.now())
    after.evaluator.restore(snapshot)
    after.evaluator.load(PERSISTED)
    after.steps(PERSISTED_STEPS[split:])

    def key(f: Firing) -> tuple[Any, ...]:
        return (f.id, f.kind, f.occurred, f.bucket_key, tags([f]))

    assert [key(f) for f in before.firings + after.firings] == [
        key(f) for f in uninterrupted.firings
    ]


def test_restore_after_load_keeps_only_unchanged_triggers() -> None:
    a = automation({"expect": ["a"], "threshold": 2, "within": 60})
    b = automation({"expect": ["b"], "threshold": 2, "within": 60})
    run = Run(a, b)
    run.steps([E(0, "a"), E(0, "b")])
    snapshot = run.evaluator.state_snapshot()
    b_changed = automation({"expect": ["b"], "threshold": 2, "within": 90}, id=str(b.id))
    fresh = Run(a, b_changed, start=at(1))
    fresh.evaluator.restore(snapshot)
    assert [f.automation_id for f in fresh.steps([E(5, "a"), E(5, "b")])] == [a.id]


def test_restore_rejects_an_unknown_snapshot_version() -> None:
    from collector.errors import StoreError

    with pytest.raises(StoreError, match="version"):
        Run().evaluator.restore({"version": 99})


def test_firing_round_trips_through_json() -> None:
    run = Run(automation({"type": "compound", "require": "all", "triggers": [A, B]}))
    (firing,) = run.steps([E(0, "a", tag="x"), E(1, "b", tag="y")])
    again = Firing.from_dict(json.loads(json.dumps(firing.to_dict())))
    assert again.to_dict() == firing.to_dict()
