"""``LeaderElection``: which collector of a cluster is the automations leader — the one holding
a PostgreSQL advisory lock in the catalog database.

* **The lock** is session-level (``pg_try_advisory_lock``) on a connection of its own that does
  nothing else: PostgreSQL releases it when that session ends, so a leader killed with SIGKILL
  (its socket closed by the kernel) frees it at once, and a leader whose host vanished frees it
  once the server's TCP keepalives give up on the session (set to ~11 s here).
* **Candidates** try to take the lock every ``interval`` seconds; the winner raises the term in
  ``herald.leadership`` and is handed it (``on_elected(term)``). The state store fences the
  leader's writes with it: a write of a deposed leader that did not notice yet fails instead of
  overwriting its successor's.
* **Losing it.** The leader checks its session every ``interval`` seconds (a round trip with a
  timeout). A failed or slow check — the connection is lost, so the lock may be someone else's
  — deposes it at once (``on_deposed()``), before anything else; then it becomes a candidate
  again on a new connection.

The DuckDB postgres extension was not used for this: it pools its connections, and a session
lock must stay on one known session whose loss is noticed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from collector.cluster.connections import connect_kwargs
from collector.cluster.schema import SCHEMA, SCHEMA_LOCK_KEY, STATEMENTS

log = logging.getLogger(__name__)

# The advisory lock key of the automations leader ('HRLDLEAD').
LOCK_KEY = 0x48524C44_4C454144
CHECK_INTERVAL_SECONDS = 1.0
# The server gives up on a silent leader session after ~idle + interval * count seconds and
# releases its lock (a leader whose host died without closing the connection).
SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)

Elected = Callable[[int], Awaitable[None]]
Deposed = Callable[[], Awaitable[None]]


def holder_name() -> str:
    """How this process shows in ``herald.leadership.holder``: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderElection:
    """Campaigns for the automations lock until ``stop``; reports winning and losing it."""

    def __init__(
        self,
        dsn: str,
        *,
        on_elected: Elected,
        on_deposed: Deposed,
        interval: float = CHECK_INTERVAL_SECONDS,
        key: int = LOCK_KEY,
        holder: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._interval = interval
        self._timeout = max(3 * interval, 2.0)
        self._key = key
        self._holder = holder or holder_name()
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.term: int | None = None  # set while this process leads

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    @property
    def campaigning(self) -> bool:
        """Started and not stopped (or failed): it leads, or tries to."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._campaign(), name="automations-leader-election")

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down (``on_deposed``) and releases the lock."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: psycopg answers a cancelled query by asking the server to cancel it and
            # then waiting for the server's reply, without a limit of its own; a catalog that
            # stopped answering must not hold up the collector's stop. Closing the connection
            # (below) ends the session, and with it the lock, either way.
            done, _ = await asyncio.wait({task}, timeout=self._timeout + 5)
            if not done:
                log.warning("automations leader election: did not stop in time; leaving it")
            elif not task.cancelled() and task.exception() is not None:
                log.warning("automations leader election ended: %s", task.exception())
        await self._depose()
        await self._disconnect()

    async def _campaign(self) -> None:
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                if self.term is None:
                    await self._try_to_lead(self._conn)
                else:
                    await self._check(self._conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.term is not None:
                    log.warning("automations leader: lost the catalog session (%s)", exc)
                else:
                    log.info("automations leader election: catalog unreachable (%s)", exc)
                # The lock may be someone else's already: stop leading before anything else.
                await self._depose()
                await self._disconnect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("automations leader election failed; retrying")
                await self._depose()
                await self._disconnect()
            await asyncio.sleep(self._interval)

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                self._dsn, **connect_kwargs("herald automations leader")
            ),
            self._timeout + 5,
        )
        try:
            # Bounded like every other round trip of the election: a schema lock held by a
            # stuck session must not keep this candidate from ever trying again.
            await asyncio.wait_for(self._prepare(conn), self._timeout + 5)
        except BaseException:
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _prepare(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        for statement in SERVER_KEEPALIVES:
            await conn.execute(statement)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK_KEY])
            for statement in STATEMENTS:
                await conn.execute(statement)

    async def _try_to_lead(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        row = await self._fetch(conn, "SELECT pg_try_advisory_lock(%s)", [self._key])
        if not (row and row[0]):
            return
        row = await self._fetch(
            conn,
            f"UPDATE {SCHEMA}.leadership SET term = term + 1, holder = %s, since = now() "
            "WHERE id = 1 RETURNING term",
            [self._holder],
        )
        assert row is not None  # the row is created with the schema
        self.term = int(row[0])
        log.info("automations leader: elected (term %d)", self.term)
        await self._on_elected(self.term)

    async def _check(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        await self._fetch(conn, "SELECT 1", [])

    async def _fetch(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], sql: str, params: list[Any]
    ) -> tuple[Any, ...] | None:
        async def run() -> tuple[Any, ...] | None:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

        return await asyncio.wait_for(run(), self._timeout)

    async def _depose(self) -> None:
        if self.term is None:
            return
        term, self.term = self.term, None
        log.warning("automations leader: stepping down (term %d)", term)
        try:
            await self._on_deposed()
        except Exception:
            log.exception("automations leader: stepping down failed")

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                # Closing ends the session, which releases the lock if we held it.
                await asyncio.wait_for(conn.close(), 5)
            except (psycopg.Error, OSError, TimeoutError):
                pass
