"""The automations runtime on a real DuckDB file and writer, driven step by step on a ManualClock:
firings are stored once with their action runs, proactive windows fire and resolve, state and
watermark survive restarts (no lost, no repeated firing), the loop guard holds, and a runner
that fell behind catches up from the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.app import build_automations
from collector.automations.runtime import AutomationRuntime
from collector.clock import ManualClock, now_us
from collector.config import AutomationsConfig
from collector.domain.events import Limits, format_time
from collector.domain.ids import uuid7_str
from collector.mapping.native import json_events_to_columns
from collector.pipeline.ingest import NativeIngest
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter


class StartedClock(ManualClock):
    """A ManualClock starting at the real time: the writer stamps `received` with the real
    time, so event times stay consistent with it (tests only move it forward)."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self.t0 = self.now()


def start_clock() -> StartedClock:
    return StartedClock()


class Rig:
    """A store, its writer and the automations runtime, sharing a ManualClock; webhooks go to
    a recorder. Times in tests are seconds after ``t0``, the clock's start."""

    def __init__(
        self,
        store: EventStore,
        writer: BatchWriter,
        runtime: AutomationRuntime,
        clock: ManualClock,
        t0: datetime,
        calls: list[httpx.Request],
    ) -> None:
        self.store, self.writer, self.runtime, self.clock, self.t0, self.calls = (
            store,
            writer,
            runtime,
            clock,
            t0,
            calls,
        )
        self.service = runtime.service

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    def event(self, name: str, t: float, rid: str = "app.job.1") -> dict[str, Any]:
        return {
            "event": name,
            "occurred": format_time(self.at(t)),
            "resource": {"prefect.resource.id": rid},
            "id": uuid7_str(),
        }

    async def emit(self, *events: dict[str, Any]) -> None:
        cols, errors = json_events_to_columns(list(events), now_us(), Limits())
        assert not errors
        await self.writer.submit(cols)
        await asyncio.sleep(0)  # let the commit callback reach the runner's queue

    async def step(self, at_seconds: float | None = None, tick: bool = False) -> list[Any]:
        if at_seconds is not None:
            self.clock.set(max(self.clock.now(), self.at(at_seconds)))
        # Commit callbacks run on the writer thread just after the waiters are woken.
        await asyncio.sleep(0.02)
        fired = await self.runtime.evaluation.step(tick=tick)
        await self.runtime.idle()
        return fired

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = self.store.cursor()
        try:
            return cur.execute(query, list(params)).fetchall()
        finally:
            cur.close()

    def events(self, prefix: str) -> list[dict[str, Any]]:
        rows = self.sql(
            "SELECT event, resource, related, payload FROM events WHERE starts_with(event, ?) "
            "ORDER BY received, occurred",
            prefix,
        )
        return [
            {
                "event": e,
                "resource": orjson.loads(r),
                "related": orjson.loads(rel),
                "payload": orjson.loads(p),
            }
            for e, r, rel, p in rows
        ]


@asynccontextmanager
async def rig(
    db: Path, clock: StartedClock | None = None, max_backlog: int = 200_000, **config: Any
) -> AsyncIterator[Rig]:
    calls: list[httpx.Request] = []
    clock = clock or start_clock()
    t0 = clock.t0
    store = EventStore(db)
    writer = BatchWriter(store, batch_max_events=1000, queue_max_events=10_000)
    writer.start()

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    runtime = build_automations(
        store,
        writer,
        NativeIngest(writer, Limits()),
        AutomationsConfig(**config),
        clock,
        http=http,
        backoff_base=0.0,
        max_backlog_events=max_backlog,
    )
    await runtime.start(background=False)
    try:
        yield Rig(store, writer, runtime, clock, t0, calls)
    finally:
        await runtime.stop()
        await http.aclose()
        await asyncio.to_thread(writer.stop)
        store.close()


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


PROACTIVE = {
    "name": "job finishes",
    "trigger": {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.finished"],
        "for_each": ["prefect.resource.id"],
        "within": 30,
    },
    "actions": [
        {
            "type": "call-webhook",
            "url": "http://hooks.test/late",
            "body": "{{ firing.kind }} {{ labels['prefect.resource.id'] }}",
        }
    ],
    "actions_on_resolve": [{"type": "do-nothing"}],
}


def test_reactive_firing_is_stored_with_its_action_runs_and_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            stored = await r.service.create(
                {
                    "name": "ship",
                    "trigger": {"expect": ["app.order.shipped"]},
                    "actions": [
                        {"type": "call-webhook", "url": "http://hooks.test/{{ event.id }}"}
                    ],
                }
            )
            shipped = r.event("app.order.shipped", 0, "app.order.1")
            await r.emit(shipped, r.event("app.order.paid", 0, "app.order.1"))
            fired = await r.step()
            assert [f.kind for f in fired] == ["triggered"]
            assert str(r.calls[0].url) == f"http://hooks.test/{shipped['id']}"
            (firing,) = await r.service.history(stored.automation.id, 10)
            assert firing["triggering_event_id"] == shipped["id"]
            (run_,) = firing["action_runs"]
            assert (run_["status"], run_["response_status"], run_["phase"]) == (
                "executed",
                200,
                "trigger",
            )
            await r.runtime.idle()
            names = [e["event"] for e in r.events("herald.")]
            assert names == [
                "herald.automation.created",
                "herald.automation.triggered",
                "herald.automation.action.triggered",
                "herald.automation.action.executed",
            ]
            triggered = r.events("herald.automation.triggered")[0]
            assert triggered["resource"]["prefect.resource.id"] == (
                f"herald.automation.{stored.automation.id}"
            )
            assert triggered["resource"]["prefect.posture"] == "Reactive"
            assert triggered["related"] == [
                {
                    "prefect.resource.id": f"herald.event.{shipped['id']}",
                    "prefect.resource.role": "triggering-event",
                }
            ]
            assert triggered["payload"]["triggering_event"]["id"] == shipped["id"]

    run(scenario)


def test_proactive_fires_at_window_end_and_resolves_when_the_event_comes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            await r.service.create(PROACTIVE)
            await r.emit(r.event("job.started", 0))
            assert await r.step(0, tick=True) == []  # delivered on time: events clock = wall
            assert await r.step(29, tick=True) == []
            (fired,) = await r.step(30, tick=True)
            assert (fired.kind, fired.occurred) == ("triggered", r.at(30))
            assert r.calls[0].content == b"triggered app.job.1"
            await r.emit(r.event("job.finished", 40))
            (resolved,) = await r.step(40)
            assert (resolved.kind, resolved.resolves) == ("resolved", fired.id)
            # `actions` run on both, `actions_on_resolve` on the resolution only (Prefect)
            firings = await r.service.history(None, 10)
            assert [(f["kind"], [a["action_list"] for a in f["action_runs"]]) for f in firings] == [
                ("resolved", ["actions", "actions_on_resolve"]),
                ("triggered", ["actions"]),
            ]
            assert r.calls[1].content == b"resolved app.job.1"
            assert [e["event"] for e in r.events("herald.automation.resolved")] == [
                "herald.automation.resolved"
            ]

    run(scenario)


def test_a_restart_mid_window_neither_loses_nor_repeats_the_firing(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    clock = start_clock()  # shared by the rigs below: a restart keeps the time line

    async def first() -> None:
        async with rig(db, clock) as r:
            await r.service.create(PROACTIVE)
            await r.emit(r.event("job.started", 0))
            await r.step(0, tick=True)
            await r.step(5, tick=True)

    async def second() -> None:
        async with rig(db, clock) as r:
            (fired,) = await r.step(31, tick=True)
            assert fired.occurred == r.at(30)  # the window survived the restart

    async def third() -> None:
        async with rig(db, clock) as r:
            assert await r.step(70, tick=True) == []
            assert len(await r.service.history(None, 10)) == 1
            assert len(r.events("herald.automation.triggered")) == 1

    run(first)
    run(second)
    run(third)


def test_events_committed_while_no_runner_ran_are_replayed(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    clock = start_clock()  # shared by the rigs below: a restart keeps the time line

    async def create() -> None:
        async with rig(db, clock) as r:
            await r.service.create(
                {
                    "name": "n",
                    "trigger": {"expect": ["a"], "threshold": 2, "within": 60},
                    "actions": [{"type": "do-nothing"}],
                }
            )
            await r.emit(r.event("a", 0))
            await r.step(1)

    async def write_without_runner() -> None:
        store = EventStore(db)
        writer = BatchWriter(store, batch_max_events=100, queue_max_events=100)
        writer.start()
        late = {
            "event": "a",
            "occurred": format_time(clock.t0 + timedelta(seconds=2)),
            "resource": {"prefect.resource.id": "app.job.1"},
            "id": uuid7_str(),
        }
        cols, _ = json_events_to_columns([late], now_us(), Limits())
        await writer.submit(cols)
        await asyncio.to_thread(writer.stop)
        store.close()

    async def restart() -> None:
        async with rig(db, clock) as r:  # start() replayed the event: threshold 2 reached
            await r.runtime.idle()
            firings = await r.service.history(None, 10)
            assert [f["kind"] for f in firings] == ["triggered"]

    run(create)
    run(write_without_runner)
    run(restart)


def test_an_unchanged_trigger_keeps_its_count_across_an_update(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            spec = {
                "name": "two",
                "trigger": {"expect": ["a"], "threshold": 2, "within": 60},
                "actions": [{"type": "do-nothing"}],
            }
            stored = await r.service.create(spec)
            await r.emit(r.event("a", 0))
            await r.step(1)
            await r.service.update(stored.automation.id, {**spec, "description": "renamed"})
            await r.emit(r.event("a", 2))
            assert len(await r.step(3)) == 1  # divergence 1: the first count was kept

    run(scenario)


def test_paused_automations_do_not_fire(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            stored = await r.service.create(
                {"name": "n", "trigger": {"expect": ["a"]}, "actions": [{"type": "do-nothing"}]}
            )
            await r.service.set_enabled(stored.automation.id, False)
            await r.emit(r.event("a", 0))
            assert await r.step(1) == []
            await r.service.set_enabled(stored.automation.id, True)
            await r.emit(r.event("a", 2))
            assert len(await r.step(3)) == 1

    run(scenario)


def test_loop_guard_an_automation_does_not_trigger_itself(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            echo = {
                "type": "emit-event",
                "event": "app.ping",
                "resource": {"prefect.resource.id": "app.echo"},
            }
            await r.service.create(
                {"name": "self", "trigger": {"expect": ["app.ping"]}, "actions": [echo]}
            )
            # ping-pong between two automations: each fires once, then the guard stops it
            await r.service.create(
                {
                    "name": "ping",
                    "trigger": {"expect": ["app.pong"]},
                    "actions": [{**echo, "event": "app.ping"}],
                }
            )
            await r.service.create(
                {
                    "name": "pong",
                    "trigger": {"expect": ["app.ping"]},
                    "actions": [{**echo, "event": "app.pong"}],
                }
            )
            await r.emit(r.event("app.ping", 0))
            for i in range(10):
                await r.step(1 + i)
            counts = dict(
                r.sql(
                    "SELECT a.name, count(*) FROM automation_firings f JOIN automations a "
                    "ON a.id = f.automation_id GROUP BY a.name"
                )
            )
            # Every automation fires twice, then each chain holds every automation that could
            # react and the cascade stops: no automation runs on an event it helped cause.
            assert counts == {"self": 2, "ping": 2, "pong": 2}
            depth = [
                e["related"][-1]["herald.automation.depth"]
                for e in r.events("app.p")
                if e["related"]
            ]
            assert sorted(depth) == ["1", "1", "2", "2", "3", "3"]

    run(scenario)


def test_a_runner_that_falls_behind_catches_up_from_the_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb", max_backlog=3) as r:  # overflows at once
            await r.service.create(
                {"name": "n", "trigger": {"expect": ["a"]}, "actions": [{"type": "do-nothing"}]}
            )
            for i in range(10):
                await r.emit(r.event("a", i))
            fired = await r.step(20)
            await r.runtime.idle()
            assert len(await r.service.history(None, 100)) == 10
            assert len(fired) <= 10

    run(scenario)


@pytest.mark.parametrize(
    "bad",
    ["{{ ", "{% for x in y %}{% for a in b %}{% for c in d %}{% endfor %}{% endfor %}{% endfor %}"],
)
def test_templates_are_checked_when_saved(tmp_path: Path, bad: str) -> None:
    from collector.errors import InvalidAutomation

    async def scenario() -> None:
        async with rig(tmp_path / "h.duckdb") as r:
            with pytest.raises(InvalidAutomation, match=r"^actions\[0\]\.body: "):
                await r.service.create(
                    {
                        "name": "n",
                        "trigger": {"expect": ["a"]},
                        "actions": [{"type": "call-webhook", "url": "http://x.test/", "body": bad}],
                    }
                )

    run(scenario)
