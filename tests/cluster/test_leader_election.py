"""The automations leader (collector.cluster.leadership) against a real PostgreSQL: one leader
among candidates, terms that rise, a lost session deposes at once, a stopped or killed leader's
lock is taken over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from collector.cluster.leadership import LeaderElection
from collector.cluster.schema import SCHEMA
from collector.testing import PostgresServer

INTERVAL = 0.2
T = TypeVar("T")


class Candidate:
    """A LeaderElection and the record of what it was told."""

    def __init__(self, dsn: str, name: str) -> None:
        self.events: list[tuple[str, int | None]] = []
        self.election = LeaderElection(
            dsn,
            on_elected=self._elected,
            on_deposed=self._deposed,
            interval=INTERVAL,
            holder=name,
        )

    async def _elected(self, term: int) -> None:
        self.events.append(("elected", term))

    async def _deposed(self) -> None:
        self.events.append(("deposed", None))


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def bounded(scenario: Coroutine[Any, Any, T], seconds: float = 120.0) -> T:
    """``scenario`` within ``seconds``; past them the test fails with every task's stack
    printed, instead of hanging the suite (a hang was seen once in CI)."""
    try:
        return await asyncio.wait_for(scenario, seconds)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise


def test_one_leader_and_takeover_when_it_stops_or_loses_its_session(
    postgres: PostgresServer,
) -> None:
    dbname = postgres.create_database()
    dsn = postgres.dsn(dbname)

    async def scenario() -> None:
        a, b, c = (Candidate(dsn, name) for name in "abc")
        for cand in (a, b, c):
            cand.election.start()
        try:
            await until(lambda: sum(x.election.is_leader for x in (a, b, c)) == 1)
            await asyncio.sleep(5 * INTERVAL)  # candidates kept trying: still exactly one
            leaders = [x for x in (a, b, c) if x.election.is_leader]
            assert len(leaders) == 1
            first = leaders[0]
            term = first.election.term
            assert term is not None
            assert (
                postgres.psql(f"SELECT term, holder FROM {SCHEMA}.leadership", dbname).strip()
                == f"{term}|{'abc'[[a, b, c].index(first)]}"
            )

            # The leader's session is cut (as a network failure would): it stops leading at
            # its next check, and another candidate takes over with a higher term.
            postgres.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'herald automations leader' AND pid IN "
                "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
                dbname,
            )
            await until(lambda: ("deposed", None) in first.events, timeout=5)
            await until(lambda: sum(x.election.is_leader for x in (a, b, c)) == 1)
            second = next(x for x in (a, b, c) if x.election.is_leader)
            assert second.election.term is not None and second.election.term > term

            # A leader that stops steps down and releases the lock: someone else leads.
            await second.election.stop()
            assert second.events[-1] == ("deposed", None)
            others = [x for x in (a, b, c) if x is not second]
            await until(lambda: sum(x.election.is_leader for x in others) == 1)
        finally:
            for cand in (a, b, c):
                await cand.election.stop()
        # Every election a candidate saw was followed by its deposition: never two at once.
        assert not any(x.election.is_leader for x in (a, b, c))

    asyncio.run(bounded(scenario()))


LEADER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from collector.cluster.leadership import LeaderElection

    async def main() -> None:
        async def elected(term: int) -> None:
            print(f"elected {term}", flush=True)
        async def deposed() -> None:
            pass
        election = LeaderElection(sys.argv[1], on_elected=elected, on_deposed=deposed,
                                  interval=0.2, holder="child")
        election.start()
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_a_leader_killed_with_sigkill_is_replaced_within_seconds(
    postgres: PostgresServer,
) -> None:
    dbname = postgres.create_database()
    dsn = postgres.dsn(dbname)
    child = subprocess.Popen(
        [sys.executable, "-c", LEADER_SCRIPT, dsn],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("elected "), line

        async def scenario() -> float:
            me = Candidate(dsn, "survivor")
            me.election.start()
            try:
                await asyncio.sleep(5 * INTERVAL)
                assert not me.election.is_leader  # the child holds the lock
                killed = time.monotonic()
                os.kill(child.pid, signal.SIGKILL)
                await until(lambda: me.election.is_leader, timeout=10)
                return time.monotonic() - killed
            finally:
                await me.election.stop()

        took = asyncio.run(bounded(scenario()))
        assert took < 10.0
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
