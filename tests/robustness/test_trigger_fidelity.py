"""Trigger semantics checked against Prefect's own source, on the events clock.

* ``follows`` chains (``src/prefect/server/events/ordering/memory.py``): a follower waits until
  its leader has been *processed* — ``record_event_as_seen`` runs only after the leader's own
  evaluation, so a leader that is itself still waiting for its leader holds its followers back
  too, and they are released after it, recursively, in ``occurred`` order.
* A proactive trigger whose ``after`` and ``expect`` name the same event
  (``src/prefect/server/events/triggers.py``, ``evaluate``): an event re-arms the open window
  at itself only once the window has reached its threshold; before that it just counts.

The evaluator runs on a ManualClock (pure, as in ``tests/unit/test_evaluator.py``); the runner
test uses a real DuckDB file, writer and runner, as a server does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx

from collector.app import build_automations
from collector.automations.evaluator import Evaluator
from collector.automations.runtime import AutomationRuntime
from collector.clock import ManualClock, now_us
from collector.config import AutomationsConfig
from collector.domain.automation_records import Firing
from collector.domain.automations import Automation, parse_automation
from collector.domain.events import Limits, ReceivedEvent, format_time
from collector.domain.ids import uuid7_str
from collector.mapping.native import json_events_to_columns
from collector.pipeline.ingest import NativeIngest
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def automation(trigger: dict[str, Any]) -> Automation:
    return parse_automation(
        {"name": "fidelity", "trigger": trigger, "actions": [{"type": "do-nothing"}]}
    )


@dataclass
class Ev:
    t: float
    name: str
    tag: str
    follows: UUID | None = None
    id: UUID = field(default_factory=uuid4)

    def received_at(self, received: datetime) -> ReceivedEvent:
        return ReceivedEvent(
            occurred=at(self.t),
            event=self.name,
            resource={"prefect.resource.id": "app.job.1"},
            payload={"tag": self.tag},
            id=self.id,
            follows=self.follows,
            received=received,
        )


def chain(*names: str) -> list[Ev]:
    """Events e1 ← e2 ← … occurring one second apart, each following the one before."""
    events: list[Ev] = []
    for i, name in enumerate(names):
        events.append(Ev(i, name, f"e{i + 1}", follows=events[-1].id if events else None))
    return events


def tags(firings: list[Firing]) -> list[str]:
    return [f.triggering_event.payload["tag"] for f in firings if f.triggering_event]


class StoredLeaders:
    """What a server's ``leader_processed`` hook knows: which events reached the store before
    the one being evaluated (every delivered event is committed before it is evaluated)."""

    def __init__(self, evaluator_clock: ManualClock) -> None:
        self.stored: set[UUID] = set()
        self.evaluator = Evaluator(evaluator_clock, leader_processed=self.stored.__contains__)

    def deliver(self, event: ReceivedEvent) -> list[Firing]:
        assert event.id is not None
        self.stored.add(event.id)
        return self.evaluator.on_event(event)


# --------------------------------------------------------------------------------------------
# follows: a leader that is itself waiting holds its followers back


def test_a_follows_chain_delivered_out_of_order_is_evaluated_in_causal_order() -> None:
    clock = ManualClock(at(10))
    server = StoredLeaders(clock)
    server.evaluator.load([automation({"expect": ["step.*"]})])
    e1, e2, e3 = chain("step.one", "step.two", "step.three")
    out: list[Firing] = []
    for e in (e2, e3, e1):  # e3's leader e2 is stored, but still waiting for e1
        out += server.deliver(e.received_at(clock.now()))
        if e is not e1:
            assert out == [], f"{e.tag} was evaluated before e1"
    assert tags(out) == ["e1", "e2", "e3"]


def test_every_arrival_order_of_a_chain_is_evaluated_in_causal_order() -> None:
    import itertools

    for order in itertools.permutations(range(4)):
        clock = ManualClock(at(10))
        server = StoredLeaders(clock)
        server.evaluator.load([automation({"expect": ["step"]})])
        events = chain("step", "step", "step", "step")
        out: list[Firing] = []
        for i in order:
            out += server.deliver(events[i].received_at(clock.now()))
        assert tags(out) == ["e1", "e2", "e3", "e4"], order


def test_an_event_no_trigger_covers_still_holds_back_its_followers() -> None:
    # Prefect passes every event through the causal ordering before it looks for triggers:
    # an uninteresting event whose leader is waiting waits too, and so do its followers.
    clock = ManualClock(at(10))
    server = StoredLeaders(clock)
    evaluator = server.evaluator
    evaluator.load([automation({"expect": ["step.*"]})])
    e1, e2, x, e4 = chain("step.one", "step.two", "unrelated", "step.four")
    out: list[Firing] = []
    for e in (e2, x, e4, e1):
        assert e.id is not None
        if not evaluator.wants(e.name, e.id, e.follows):
            server.stored.add(e.id)  # a server only moves the events clock for it
            continue
        out += server.deliver(e.received_at(clock.now()))
    assert tags(out) == ["e1", "e2", "e4"]


def test_a_lost_leader_releases_its_whole_chain_in_order() -> None:
    clock = ManualClock(at(10))
    server = StoredLeaders(clock)
    server.evaluator.load([automation({"expect": ["step"]})])
    _never, e2, e3 = chain("step", "step", "step")
    assert server.deliver(e3.received_at(clock.now())) == []
    assert server.deliver(e2.received_at(clock.now())) == []
    clock.set(at(10 + 15 * 60))
    assert tags(server.evaluator.tick(clock.now())) == ["e2", "e3"]


# --------------------------------------------------------------------------------------------
# Proactive, `after` and `expect` naming the same event


SAME_EVENT = {
    "posture": "Proactive",
    "after": ["some-event"],
    "expect": ["some-event"],
    "threshold": 2,
    "within": 10,
}


def run_proactive(events: list[float], ticks: list[float]) -> list[Firing]:
    """Events delivered on time, ticks as a server's loop would run them (events clock)."""
    clock = ManualClock(T0)
    evaluator = Evaluator(clock)
    evaluator.load([automation(SAME_EVENT)])
    steps = sorted([(t, "event") for t in events] + [(t, "tick") for t in ticks])
    out: list[Firing] = []
    for t, kind in steps:
        clock.set(max(clock.now(), at(t)))
        if kind == "tick":
            out += evaluator.tick(clock.now())
        else:
            out += evaluator.on_event(
                ReceivedEvent(
                    occurred=at(t),
                    event="some-event",
                    resource={"prefect.resource.id": "some.resource"},
                    id=uuid4(),
                    received=clock.now(),
                )
            )
    return out


def test_same_event_in_after_and_expect_fires_at_the_end_of_the_first_window() -> None:
    # Prefect's test_same_event_in_expect_and_after_proactively_fires: one more event inside
    # the window opened at +1 s is below the threshold of 2, so it does not re-arm it.
    ticks = [2, 4, 10, 10.999, 11, 12, 13, 14, 30]
    firings = run_proactive([1, 3], ticks)
    assert [(f.kind, f.occurred) for f in firings] == [("triggered", at(11))]


def test_same_event_in_after_and_expect_reaching_the_threshold_re_arms_at_the_last() -> None:
    # Prefect's ..._proactively_does_not_fire: at +3 s the window holds 2 events, so the
    # third re-arms the window at itself ([3, 13)) and nothing fires by +11 s.
    firings = run_proactive([1, 2, 3], [10, 11, 12])
    assert firings == []
    firings = run_proactive([1, 2, 3], [10, 11, 12, 13])
    assert [(f.kind, f.occurred) for f in firings] == [("triggered", at(13))]


def test_heartbeat_threshold_1_still_slides_with_every_heartbeat() -> None:
    clock = ManualClock(T0)
    evaluator = Evaluator(clock)
    evaluator.load([automation({**SAME_EVENT, "threshold": 1, "within": 30})])
    out: list[Firing] = []
    for t in (0, 10, 20):
        clock.set(at(t))
        out += evaluator.on_event(
            ReceivedEvent(
                occurred=at(t),
                event="some-event",
                resource={"prefect.resource.id": "r"},
                id=uuid4(),
                received=at(t),
            )
        )
    for t in (45, 49, 50):
        clock.set(at(t))
        out += evaluator.tick(clock.now())
    assert [f.occurred for f in out] == [at(50)]


# --------------------------------------------------------------------------------------------
# The runner: leaders are "stored" long before they are processed


@asynccontextmanager
async def runner_on(db: Path) -> AsyncIterator[tuple[AutomationRuntime, BatchWriter]]:
    store = EventStore(db)
    writer = BatchWriter(store, batch_max_events=1000, queue_max_events=10_000)
    writer.start()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    clock = ManualClock(datetime.now(UTC))
    runner = build_automations(
        store,
        writer,
        NativeIngest(writer, Limits()),
        AutomationsConfig(),
        clock,
        http=http,
        backoff_base=0.0,
    )
    await runner.start(background=False)
    try:
        yield runner, writer
    finally:
        await runner.stop()
        await http.aclose()
        await asyncio.to_thread(writer.stop)
        store.close()


async def evaluate_through(runner: AutomationRuntime, event_id: str) -> list[Firing]:
    """Step the runner until it has evaluated ``event_id`` (commit callbacks arrive on the
    writer thread, and the automation's own ``created`` event is queued before the first)."""
    fired: list[Firing] = []
    deadline = asyncio.get_running_loop().time() + 10
    # The watermark is the key (received, occurred, id) of the last event evaluated.
    while (runner.evaluation.watermark or (0, 0, ""))[2] != event_id:
        assert asyncio.get_running_loop().time() < deadline, "the runner never saw the event"
        fired += await runner.evaluation.step(tick=False)
        await asyncio.sleep(0.005)
    await runner.idle()
    return fired


def test_the_runner_evaluates_a_chain_delivered_out_of_order_in_causal_order(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[list[str]]:
        async with runner_on(tmp_path / "h.duckdb") as (runner, writer):
            await runner.service.create(
                {
                    "name": "steps",
                    "trigger": {"expect": ["step.*"]},
                    "actions": [{"type": "do-nothing"}],
                }
            )
            now = datetime.now(UTC)
            ids = [uuid7_str() for _ in range(5)]
            names = ["step.one", "step.two", "unrelated", "step.four", "step.five"]
            events = [
                {
                    "event": names[i],
                    "occurred": format_time(now + timedelta(milliseconds=i)),
                    "resource": {"prefect.resource.id": "app.job.1"},
                    "payload": {"tag": f"e{i + 1}"},
                    "id": ids[i],
                    **({"follows": ids[i - 1]} if i else {}),
                }
                for i in range(5)
            ]
            steps: list[list[str]] = []
            for i in (1, 2, 3, 4, 0):  # e2, x, e4, e5 (each stored first), then e1
                cols, errors = json_events_to_columns([events[i]], now_us(), Limits())
                assert not errors
                await writer.submit(cols)
                fired = await evaluate_through(runner, ids[i])
                steps.append(
                    [f.triggering_event.payload["tag"] for f in fired if f.triggering_event]
                )
            return steps

    assert asyncio.run(scenario()) == [[], [], [], [], ["e1", "e2", "e4", "e5"]]
