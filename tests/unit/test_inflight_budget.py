"""InflightBudget, the gRPC server's request-bytes budget: first come first served, shrinking
and releasing wake waiters, a wait that runs out is ``Busy`` (with a retry hint), and a waiter
that gives up leaves no bytes behind."""

from __future__ import annotations

import asyncio

import pytest

from collector.errors import Busy
from collector.server.admission import InflightBudget


def test_reserve_shrink_release_account_bytes() -> None:
    async def run() -> None:
        budget = InflightBudget(100)
        a = await budget.reserve(60, timeout=1)
        assert budget.in_use == 60
        a.shrink(10)
        assert budget.in_use == 10
        a.shrink(50)  # growing is not shrinking: ignored
        assert budget.in_use == 10
        a.release()
        a.release()  # idempotent
        assert budget.in_use == 0

    asyncio.run(run())


def test_waiters_are_served_in_arrival_order_when_room_frees() -> None:
    async def run() -> None:
        budget = InflightBudget(100)
        first = await budget.reserve(100, timeout=1)
        order: list[str] = []

        async def wait(name: str, nbytes: int) -> None:
            reservation = await budget.reserve(nbytes, timeout=5)
            order.append(name)
            await asyncio.sleep(0)
            reservation.release()

        big = asyncio.create_task(wait("big", 100))
        await asyncio.sleep(0)
        small = asyncio.create_task(wait("small", 10))
        await asyncio.sleep(0)
        # Only 10 bytes free after the shrink: "small" would fit but must not overtake "big".
        first.shrink(90)
        await asyncio.sleep(0.01)
        assert order == []
        first.release()
        await asyncio.gather(big, small)
        assert order == ["big", "small"]
        assert budget.in_use == 0

    asyncio.run(run())


def test_a_wait_that_runs_out_is_busy_with_a_retry_hint_and_takes_nothing() -> None:
    async def run() -> None:
        budget = InflightBudget(100)
        held = await budget.reserve(80, timeout=1)
        with pytest.raises(Busy, match=r"server\.max_inflight_bytes") as caught:
            await budget.reserve(50, timeout=0.05)
        assert caught.value.retry_after > 0
        assert budget.in_use == 80
        held.release()
        assert budget.in_use == 0
        # The timed-out waiter is gone: the next one is served at once.
        again = await budget.reserve(100, timeout=0.05)
        again.release()

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_no_bytes_behind_and_unblocks_the_queue() -> None:
    async def run() -> None:
        budget = InflightBudget(100)
        held = await budget.reserve(95, timeout=1)
        blocked = asyncio.create_task(budget.reserve(100, timeout=5))
        await asyncio.sleep(0)
        behind = asyncio.create_task(budget.reserve(5, timeout=5))
        await asyncio.sleep(0)
        assert not behind.done()  # waits behind the head
        blocked.cancel()
        reservation = await asyncio.wait_for(behind, 1)
        assert budget.in_use == 100
        reservation.release()
        held.release()
        assert budget.in_use == 0

    asyncio.run(run())


def test_granted_just_as_cancelled_is_given_back() -> None:
    async def run() -> None:
        budget = InflightBudget(100)
        held = await budget.reserve(100, timeout=1)
        waiter = asyncio.create_task(budget.reserve(100, timeout=5))
        await asyncio.sleep(0)
        held.release()  # grants the waiter (its future is resolved) ...
        waiter.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert budget.in_use == 0

    asyncio.run(run())


def test_more_than_the_capacity_is_a_programming_error() -> None:
    async def run() -> None:
        with pytest.raises(ValueError):
            await InflightBudget(10).reserve(11, timeout=1)

    asyncio.run(run())
