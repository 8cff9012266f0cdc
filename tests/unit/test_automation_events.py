"""Events about automations (P§6.5 with `herald.`) and the loop guard's cause chain; and
backtests over an in-memory store (history replayed in event time on a ManualClock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from collector.automations.backtest import backtest, exact_event_names
from collector.automations.events import (
    CHAIN_LABEL,
    DEPTH_LABEL,
    MAX_DEPTH,
    Cause,
    action_event,
    cause_of,
    firing_cause,
    guard_skips,
    state_event,
)
from collector.clock import now_us
from collector.domain.automation_records import Firing, FiringKind
from collector.domain.automations import parse_automation
from collector.domain.events import Limits, ReceivedEvent, format_time
from collector.domain.ids import uuid7_str
from collector.mapping.native import json_events_to_columns
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore, columns_to_arrow

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def automation(trigger: dict[str, Any], name: str = "a") -> Any:
    return parse_automation({"name": name, "trigger": trigger, "actions": []})


def received(
    resource: dict[str, str], related: list[dict[str, str]] | None = None, name: str = "app.x"
) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=T0, event=name, resource=resource, related=related or [], id=uuid4(), received=T0
    )


def test_an_ordinary_event_has_no_cause() -> None:
    assert cause_of(received({"prefect.resource.id": "app.order.1"})) == Cause()


def test_the_cause_is_read_from_the_automation_resource_or_the_automation_role() -> None:
    on_resource = received(
        {"prefect.resource.id": "herald.automation.1", DEPTH_LABEL: "2", CHAIN_LABEL: "a b"}
    )
    assert cause_of(on_resource) == Cause(2, ("a", "b"))
    on_related = received(
        {"prefect.resource.id": "app.alert"},
        [
            {"prefect.resource.id": "x", "prefect.resource.role": "customer"},
            {
                "prefect.resource.id": "herald.automation.b",
                "prefect.resource.role": "automation",
                DEPTH_LABEL: "1",
                CHAIN_LABEL: "b",
            },
        ],
    )
    assert cause_of(on_related) == Cause(1, ("b",))
    mangled = received({"prefect.resource.id": "herald.automation.1", DEPTH_LABEL: "x"})
    assert cause_of(mangled).depth > MAX_DEPTH  # never switches the guard off


def test_the_guard_skips_the_automations_in_the_chain_and_deep_events() -> None:
    a, b = automation({}, "a"), automation({}, "b")
    caused_by_a = received(
        {"prefect.resource.id": "herald.automation.x", DEPTH_LABEL: "1", CHAIN_LABEL: str(a.id)}
    )
    assert guard_skips(caused_by_a, a) and not guard_skips(caused_by_a, b)
    deep = received(
        {
            "prefect.resource.id": "herald.automation.x",
            DEPTH_LABEL: str(MAX_DEPTH + 1),
            CHAIN_LABEL: "",
        }
    )
    assert guard_skips(deep, b)


def firing_of(a: Any, event: ReceivedEvent | None, kind: FiringKind = "triggered") -> Firing:
    return Firing(
        id=uuid4(),
        automation_id=a.id,
        trigger_id=a.trigger.id,
        trigger_path="trigger",
        kind=kind,
        occurred=T0,
        triggering_labels={"region": "eu"},
        triggering_event=event,
    )


def test_a_firing_extends_its_events_cause() -> None:
    a = automation({"expect": ["app.x"]})
    upstream = received(
        {"prefect.resource.id": "herald.automation.z", DEPTH_LABEL: "1", CHAIN_LABEL: "z"}
    )
    assert firing_cause(firing_of(a, upstream)) == Cause(2, ("z", str(a.id)))
    assert firing_cause(firing_of(a, None)) == Cause(1, (str(a.id),))


def test_triggered_event_shape() -> None:
    a = automation({"expect": ["app.x"], "posture": "Reactive"})
    event = received({"prefect.resource.id": "app.order.1"})
    firing = firing_of(a, event)
    out = state_event(a, firing, firing_cause(firing))
    assert out["event"] == "herald.automation.triggered"
    assert out["occurred"] == format_time(T0)
    assert out["resource"] == {
        "prefect.resource.id": f"herald.automation.{a.id}",
        "prefect.resource.name": "a",
        "prefect.posture": "Reactive",
        DEPTH_LABEL: "1",
        CHAIN_LABEL: str(a.id),
    }
    assert out["related"] == [
        {
            "prefect.resource.id": f"herald.event.{event.id}",
            "prefect.resource.role": "triggering-event",
        }
    ]
    assert out["payload"]["triggering_labels"] == {"region": "eu"}
    assert out["payload"]["triggering_event"]["id"] == str(event.id)
    # the same firing always announces itself with the same id (stored once)
    assert state_event(a, firing, firing_cause(firing))["id"] == out["id"]


def test_action_event_related_order() -> None:
    a = automation({"expect": ["app.x"]})
    event = received({"prefect.resource.id": "app.order.1"})
    firing = firing_of(a, event)
    state_id = uuid4()
    out = action_event(
        "executed",
        a,
        firing,
        Cause(),
        event_id=uuid4(),
        occurred=T0,
        payload={"action_index": 0},
        state_event_id=state_id,
        targets=[{"prefect.resource.id": "t", "prefect.resource.role": "target"}],
    )
    assert [r["prefect.resource.role"] for r in out["related"]] == [
        "target",
        "automation-triggered-event",
        "triggering-event",
    ]
    assert out["resource"]["prefect.trigger-type"] == "event"


# --------------------------------------------------------------------------------------------
# Backtests


def store_with(events: list[dict[str, Any]]) -> AutomationStore:
    store = EventStore(":memory:")
    cols, errors = json_events_to_columns(events, now_us(), Limits())
    assert not errors
    store.append(columns_to_arrow(cols, [now_us()] * len(cols)))
    return AutomationStore(store)


def ev(name: str, seconds: float, rid: str = "w.1") -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(T0 + timedelta(seconds=seconds)),
        "resource": {"prefect.resource.id": rid},
        "id": uuid7_str(),
    }


def test_exact_names_let_the_store_read_less() -> None:
    assert exact_event_names(automation({"expect": ["b", "a"], "after": ["c"]})) == ["a", "b", "c"]
    assert exact_event_names(automation({"expect": ["app.*"]})) is None
    assert exact_event_names(automation({})) is None


def test_backtest_heartbeats_fire_within_after_the_last_one() -> None:
    db = store_with(
        [ev("beat", 0), ev("beat", 5), ev("beat", 8), ev("other", 30), ev("beat", 100, "w.2")]
    )
    trigger = {
        "posture": "Proactive",
        "after": ["beat"],
        "expect": ["beat"],
        "within": 10,
        "for_each": ["prefect.resource.id"],
    }
    progress: list[tuple[int, int]] = []
    firings, read, truncated = backtest(
        db,
        automation(trigger),
        T0,
        T0 + timedelta(seconds=105),
        progress=lambda done, total: progress.append((done, total)),
    )
    assert [(f.triggering_labels["prefect.resource.id"], f.occurred) for f in firings] == [
        ("w.1", T0 + timedelta(seconds=18))
    ]  # w.2's window ends after `until`
    assert (read, truncated, progress[-1]) == (4, False, (4, 4))


def test_backtest_proactive_without_for_each_fires_every_empty_window() -> None:
    db = store_with([ev("beat", 5)])
    trigger = {"posture": "Proactive", "expect": ["beat"], "within": 10}
    firings, _, _ = backtest(db, automation(trigger), T0, T0 + timedelta(seconds=40))
    # windows [0,10) has the beat; [10,20), [20,30), [30,40) are empty
    assert [f.occurred for f in firings] == [T0 + timedelta(seconds=s) for s in (20, 30, 40)]
