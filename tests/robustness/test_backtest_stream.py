"""The backtest progress stream delivers every progress message the work produced, the last
one included, before the result — however the worker thread's last reports and its end race
on the event loop.

The race was: the stream stopped reading its queue as soon as the work was done, so progress
reports still queued (often the final ``done == total``) were dropped and the CLI's progress
bar ended short. The deterministic tests drive the servicer's thread-to-stream bridge with work
that reports a burst of messages right before it returns; the end-to-end test runs real
backtests over gRPC with several chunks of history, repeatedly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.automations import backtest as backtest_module
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.errors import InvalidInput
from collector.server.automations_grpc import ThreadWork
from collector.testing import running_herald, test_config

Report = Callable[[int, int], None]


def collect(work: Callable[[Report, Callable[[], bool]], Any]) -> tuple[list[Any], Any]:
    async def scenario() -> tuple[list[Any], Any]:
        running = ThreadWork(work)
        seen = [item async for item in running.progress()]
        return seen, await running.result()

    return asyncio.run(scenario())


def test_every_progress_message_reported_just_before_the_work_ends_is_streamed() -> None:
    def work(report: Report, _stop: Callable[[], bool]) -> str:
        for i in range(1, 2_001):  # a burst at the very end, nothing after it
            report(i, 2_000)
        return "done"

    for _ in range(20):
        seen, result = collect(work)
        assert seen == [(i, 2_000) for i in range(1, 2_001)]
        assert result == "done"


def test_progress_reported_while_the_reader_is_busy_is_not_lost() -> None:
    # The work finishes while the stream's reader still has messages to hand out.
    finished = threading.Event()

    def work(report: Report, _stop: Callable[[], bool]) -> int:
        for i in range(100):
            report(i, 99)
        finished.set()
        return 7

    async def scenario() -> list[Any]:
        running = ThreadWork(work)
        seen: list[Any] = []
        async for item in running.progress():
            if not seen:
                await asyncio.to_thread(finished.wait, 10)  # the work is over by now
            seen.append(item)
        assert await running.result() == 7
        return seen

    assert asyncio.run(scenario()) == [(i, 99) for i in range(100)]


def test_a_failing_work_ends_the_stream_and_raises_its_error() -> None:
    def work(report: Report, _stop: Callable[[], bool]) -> None:
        report(0, 1)
        raise InvalidInput("--until must be later than --since")

    async def scenario() -> list[Any]:
        running = ThreadWork(work)
        seen = [item async for item in running.progress()]
        with pytest.raises(InvalidInput):
            await running.result()
        return seen

    assert asyncio.run(scenario()) == [(0, 1)]


def test_a_reader_that_goes_away_stops_the_work() -> None:
    stopped = threading.Event()

    def work(report: Report, stop: Callable[[], bool]) -> None:
        report(0, 1)
        while not stop():
            threading.Event().wait(0.001)
        stopped.set()

    async def scenario() -> None:
        running = ThreadWork(work)
        stream = running.progress()
        assert await anext(stream) == (0, 1)
        await stream.aclose()  # the client cancelled the call
        assert await asyncio.to_thread(stopped.wait, 10)

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------------
# End to end: a real server, a real client, history in several chunks


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[tuple[AutomationsClient, HeraldClient]]:
    with running_herald(test_config(tmp_path / "h.duckdb")) as server:
        with (
            AutomationsClient(server.grpc_address) as automations,
            HeraldClient(server.grpc_address) as events,
        ):
            yield automations, events


def test_a_backtest_over_several_chunks_reports_its_final_progress(
    clients: tuple[AutomationsClient, HeraldClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks (the server runs in this process) give many progress messages per call; the
    # last chunk is a short one, so the final report is made right before the work returns.
    monkeypatch.setattr(backtest_module, "CHUNK", 64)
    automations, events = clients
    now = datetime.now(UTC)
    total = 1_000
    events.emit(
        [
            {
                "event": "app.order.shipped",
                "occurred": format_time(now - timedelta(seconds=total - i)),
                "resource": {"prefect.resource.id": f"app.order.{i % 7}"},
                "id": uuid7_str(),
            }
            for i in range(total)
        ]
    )
    trigger = {"expect": ["app.order.shipped"], "threshold": 3, "within": 60}
    for _ in range(10):
        seen: list[tuple[int, int]] = []

        def record(done: int, n: int, into: list[tuple[int, int]] = seen) -> None:
            into.append((done, n))

        result = automations.backtest(
            since=format_time(now - timedelta(hours=1)),
            until=format_time(now),
            trigger=trigger,
            progress=record,
        )
        assert result["events"] == total
        assert seen == [(0, total), *((d, total) for d in range(64, total, 64)), (total, total)]
