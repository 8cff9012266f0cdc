"""Action lanes (issue 9): the per-automation rate limit (a sliding window), the bounded queue,
fair turns between automations, and cancelling — plus the ``rate_limit`` field, the default
limit for actions that call out, the journal's batching and a webhook that stops retrying
when its automation is paused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from collector.automations.actions import ActionCall, ActionExecutor, StopSignal
from collector.automations.events import Cause
from collector.automations.journal import RunJournal
from collector.automations.lanes import ActionLanes, Limit, effective_limit
from collector.clock import ManualClock
from collector.config import AutomationsConfig
from collector.domain.automation_records import ActionRun, Firing, NewFiring
from collector.domain.automations import parse_automation
from collector.errors import InvalidAutomation
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore

A, B = uuid4(), uuid4()


class Rig:
    """Lanes whose runs block until the test lets them finish; records the start order."""

    def __init__(self, *, max_queued: int = 100, max_running: int = 4, per_lane: int = 2) -> None:
        self.started: list[tuple[str, StopSignal]] = []
        self.release = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()

        async def execute(item: str, stop: StopSignal) -> None:
            self.started.append((item, stop))
            await self.release.wait()

        def spawn(coro: Awaitable[None]) -> asyncio.Task[Any]:
            task = asyncio.ensure_future(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return task

        self.lanes: ActionLanes[str] = ActionLanes(
            max_queued=max_queued,
            max_running=max_running,
            max_running_per_lane=per_lane,
            execute=execute,
            spawn=spawn,
        )

    def add(self, automation_id: UUID, *items: str, limit: Limit | None = None) -> bool:
        admission = self.lanes.admit(automation_id, len(items), limit, 0.0)
        assert admission.status is None, admission.reason
        return self.lanes.enqueue(admission, list(items))

    @property
    def order(self) -> list[str]:
        return [item for item, _ in self.started]

    async def finish(self) -> None:
        self.release.set()
        while self.tasks:
            await asyncio.wait(set(self.tasks))


async def settle() -> None:
    """Let spawned runs reach their first await (a task starts on the next loop turn)."""
    for _ in range(3):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_rate_limit_is_a_sliding_window() -> None:
    async def scenario() -> None:
        lanes = Rig().lanes
        limit = Limit(2, 10.0)
        decided = {t: lanes.admit(A, 1, limit, t) for t in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 11.5)}
        assert [t for t, a in decided.items() if a.status is None] == [0.0, 1.0, 10.0, 11.5]
        assert decided[2.0].status == "skipped"
        assert decided[2.0].reason == "rate limit: at most 2 firings per 10 s run their actions"
        # A cooldown (repeat_interval): one firing per window.
        assert Limit(1, 300.0).describe() == "at most 1 firing per 300 s"
        # Another automation has its own window.
        assert lanes.admit(B, 1, limit, 2.0).status is None

    run(scenario)


def test_a_lowered_limit_applies_at_once() -> None:
    async def scenario() -> None:
        lanes = Rig().lanes
        for t in range(5):
            assert lanes.admit(A, 1, Limit(10, 60.0), float(t)).status is None
        assert lanes.admit(A, 1, Limit(2, 60.0), 5.0).status == "skipped"

    run(scenario)


def test_the_queue_is_bounded_and_a_firing_that_does_not_fit_is_skipped() -> None:
    async def scenario() -> None:
        rig = Rig(max_queued=3, per_lane=1)
        rig.add(A, "a0")  # starts at once: running, not waiting
        await settle()
        assert rig.order == ["a0"]
        rig.add(A, "a1", "a2")  # waits
        assert rig.lanes.waiting(A) == 2
        too_many = rig.lanes.admit(A, 2, None, 0.0)
        assert (too_many.status, too_many.reason) == (
            "skipped",
            "the automation's action queue is full (2 runs waiting; "
            "automations.max_queued_actions = 3)",
        )
        fits = rig.lanes.admit(A, 1, None, 0.0)  # reserved while its firing is stored
        assert fits.status is None
        assert rig.lanes.admit(A, 1, None, 0.0).status == "skipped"
        rig.lanes.release(fits)  # not new after all: its place is free again
        assert rig.lanes.admit(A, 1, None, 0.0).status is None
        # An empty lane takes a firing bigger than the bound (it would never run otherwise).
        assert rig.lanes.admit(B, 5, None, 0.0).status is None
        await rig.finish()
        assert rig.order == ["a0", "a1", "a2"]

    run(scenario)


def test_lanes_take_turns_and_respect_both_concurrency_limits() -> None:
    async def scenario() -> None:
        rig = Rig(max_running=3, per_lane=2)
        rig.add(A, *(f"a{i}" for i in range(6)))
        rig.add(B, "b0", "b1", "b2")
        await settle()
        # A hot automation holds at most its share; B got the free slot.
        assert rig.order == ["a0", "a1", "b0"]
        assert rig.lanes.running() == 3
        rig.release.set()
        await asyncio.sleep(0.01)
        await rig.finish()
        assert sorted(rig.order) == sorted([*(f"a{i}" for i in range(6)), "b0", "b1", "b2"])
        # Turns alternate while both have work.
        assert rig.order[:6] == ["a0", "a1", "b0", "a2", "b1", "a3"]

    run(scenario)


def test_cancel_takes_what_waits_voids_admissions_and_signals_runs_in_flight() -> None:
    async def scenario() -> None:
        rig = Rig(per_lane=1)
        rig.add(A, "a0", "a1", "a2")
        await settle()
        in_flight = rig.started[0][1]
        late = rig.lanes.admit(A, 1, None, 0.0)  # its firing is being stored
        rig.lanes.close(A, "the automation was paused")
        assert rig.lanes.admit(A, 1, None, 0.0).status == "cancelled"
        assert rig.lanes.cancel(A) == ["a1", "a2"]
        assert in_flight.is_set() and in_flight.reason == "the automation was paused"
        assert rig.lanes.enqueue(late, ["a3"]) is False  # the caller records it cancelled
        assert rig.lanes.waiting(A) == 0
        # Resumed: runs start again, with a fresh signal.
        rig.lanes.open(A)
        await rig.finish()
        rig.release = asyncio.Event()
        rig.add(A, "a4")
        await settle()
        assert rig.order == ["a0", "a4"]
        assert not rig.started[-1][1].is_set()
        await rig.finish()

    run(scenario)


def test_a_failed_pause_leaves_the_lane_as_it_was() -> None:
    async def scenario() -> None:
        rig = Rig(per_lane=1)
        rig.add(A, "a0", "a1")
        previous = rig.lanes.closed_reason(A)
        rig.lanes.close(A, "the automation was paused")
        rig.release.set()
        await asyncio.sleep(0.01)
        assert rig.order == ["a0"]  # closed: a1 does not start
        rig.lanes.restore(A, previous)
        await rig.finish()
        assert rig.order == ["a0", "a1"]

    run(scenario)


def test_a_stopped_server_starts_nothing_more() -> None:
    async def scenario() -> None:
        rig = Rig(per_lane=1)
        rig.add(A, "a0", "a1")
        rig.lanes.stop()
        await rig.finish()
        assert rig.order == ["a0"]
        assert rig.lanes.waiting(A) == 1  # stays `triggered`: resumed after a restart

    run(scenario)


def automation(**extra: Any) -> Any:
    return parse_automation(
        {
            "name": "n",
            "trigger": {"expect": ["a"]},
            "actions": [{"type": "do-nothing"}],
            **extra,
        }
    )


def test_the_rate_limit_field_and_the_default_for_actions_that_call_out() -> None:
    config = AutomationsConfig(rate_limit_max_firings=7, rate_limit_within_seconds=30)
    hook = [{"type": "call-webhook", "url": "http://hooks.test/"}]
    command = [{"type": "run-command", "argv": ["true"]}]
    assert effective_limit(automation(), config) is None  # calls nothing outside
    assert effective_limit(automation(actions=hook), config) == Limit(7, 30.0)
    assert effective_limit(automation(actions_on_resolve=command), config) == Limit(7, 30.0)
    assert effective_limit(automation(actions=hook, rate_limit="off"), config) is None
    own = automation(rate_limit={"max_firings": 1, "within": "PT1H"})
    assert effective_limit(own, config) == Limit(1, 3600.0)
    assert own.model_dump(mode="json")["rate_limit"] == {"max_firings": 1, "within": 3600.0}
    off = AutomationsConfig(rate_limit_max_firings=0)
    assert effective_limit(automation(actions=hook), off) is None
    # Prefect's JSON (no field) loads; the dump round-trips.
    assert automation().rate_limit is None
    assert "rate_limit" not in automation().model_dump(mode="json")
    assert automation(rate_limit=own.model_dump(mode="json")["rate_limit"]) is not None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"max_firings": 0}, "rate_limit.max_firings: Input should be greater than or equal to 1"),
        ({"max_firings": 2, "within": 0}, "rate_limit.within: must be greater than 0"),
        ({"max_firings": 2, "per": 5}, "rate_limit.per: unknown field"),
        ({"within": 5}, "rate_limit.max_firings: required"),
        ("none", 'rate_limit: should be {"max_firings": N, "within": seconds}, "off"'),
        (5, 'rate_limit: should be {"max_firings": N, "within": seconds}, "off"'),
    ],
)
def test_a_bad_rate_limit_names_the_field(value: Any, message: str) -> None:
    with pytest.raises(InvalidAutomation) as caught:
        automation(rate_limit=value)
    assert str(caught.value).startswith(message)


def test_the_journal_batches_what_arrives_during_a_write(tmp_path: Path) -> None:
    store = EventStore(str(tmp_path / "h.duckdb"))
    db = AutomationStore(store)
    firing_ids = [uuid4() for _ in range(200)]
    now = datetime.now(UTC)
    items = [
        NewFiring(
            Firing(fid, A, uuid4(), "trigger", "triggered", now),
            uuid4(),
            [ActionRun(uuid4(), fid, A, "actions", 0, "do-nothing", "trigger")],
        )
        for fid in firing_ids
    ]
    assert db.record(items, None, now) == set(firing_ids)
    writes: list[tuple[int, int]] = []

    async def scenario() -> None:
        async def write(runs: Any, announced: Any) -> None:
            writes.append((len(runs), len(announced)))
            await asyncio.to_thread(db.update_runs, runs, announced)

        journal = RunJournal(write)
        for i, item in enumerate(items):
            run_ = item.runs[0]
            run_.status, run_.finished = "executed", now
            journal.record([run_], [item.firing.id])
            if i == 0:
                await settle()  # the first write is under way
        await journal.flush()

    try:
        run(scenario)
        # The first record starts a write; the other 199 arrive during it: one more write.
        assert writes == [(1, 1), (199, 199)]
        cur = store.cursor()
        try:
            assert cur.execute(
                "SELECT status, count(*) FROM action_runs GROUP BY 1"
            ).fetchall() == [("executed", 200)]
            assert cur.execute(
                "SELECT count(*) FROM automation_firings WHERE announced"
            ).fetchone() == (200,)
        finally:
            cur.close()
    finally:
        store.close()


def test_a_webhook_stops_retrying_when_its_automation_is_paused() -> None:
    requests: list[httpx.Request] = []
    stop = StopSignal()

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        stop.set("the automation was paused")  # paused while the first attempt was out
        return httpx.Response(503)

    async def scenario() -> None:
        async def emit(events: Any, resumed: bool) -> None:
            return None

        async def set_enabled(automation_id: UUID, enabled: bool, cause: Cause) -> None:
            return None

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            executor = ActionExecutor(
                AutomationsConfig(),
                ManualClock(datetime.now(UTC)),
                http=http,
                emit=emit,
                set_enabled=set_enabled,
                backoff_base=30.0,  # the backoff is cut short, not waited out
            )
            hooked = automation(
                actions=[{"type": "call-webhook", "url": "http://hooks.test/", "retries": 5}]
            )
            firing = Firing(uuid4(), hooked.id, uuid4(), "trigger", "triggered", datetime.now(UTC))
            outcome = await asyncio.wait_for(
                executor.run(
                    ActionCall(
                        automation=hooked,
                        firing=firing,
                        action=hooked.actions[0],
                        where="actions[0]",
                        run_id=uuid4(),
                        event=None,
                        cause=Cause(),
                        stop=stop,
                    )
                ),
                5,
            )
        assert outcome.status == "cancelled"
        assert outcome.reason == (
            "the automation was paused; no further attempt after the webhook answered "
            "503 Service Unavailable (1 attempt)"
        )
        assert outcome.detail["attempts"] == 1
        assert len(requests) == 1

    run(scenario)
