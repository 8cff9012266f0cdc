"""``PgConnections``: a few PostgreSQL connections (psycopg 3) to the catalog database, handed
out one transaction at a time to the threads that make blocking store calls.

A connection that failed on the wire is dropped, not reused; the next transaction opens a new
one (PostgreSQL restarted, a network blip). One that sat idle for a while is checked with a
round trip before it is lent, so a server restart meanwhile costs a reconnect, not a failed
call. Every error leaves as ``collector.errors``: a database failure is ``StoreError``;
Herald's own errors raised inside a transaction (``NotFound``, ``Conflict``) roll it back and
pass through unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from collector.cluster.schema import SCHEMA_LOCK_KEY, STATEMENTS
from collector.errors import StoreError

CONNECT_TIMEOUT_SECONDS = 5
# A statement that runs longer than this is cancelled by the server (a lock never released,
# a server in trouble): the caller gets a StoreError instead of a thread stuck for good.
STATEMENT_TIMEOUT_MS = 30_000
# An idle connection older than this is pinged before use (a restart may have cut it).
PING_AFTER_IDLE_SECONDS = 5.0
# libpq's TCP keepalives: a peer that vanished without closing the connection (a host power
# loss, a partition) is noticed within about idle + interval * count seconds.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def connect_kwargs(application_name: str) -> dict[str, Any]:
    """Connection options every Herald connection to the catalog database uses."""
    return {
        "autocommit": True,  # transactions are explicit (conn.transaction())
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
        **KEEPALIVES,
    }


def store_error(exc: psycopg.Error, what: str) -> StoreError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"{what} failed (PostgreSQL catalog database): {text}")


class PgConnections:
    """Connections to one PostgreSQL database; ``transaction()`` lends one for a transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        max_idle: int = 4,
        application_name: str = "herald",
        ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._kwargs = connect_kwargs(application_name)
        self._max_idle = max_idle
        self._ping_after = ping_after_idle_seconds
        # (connection, when it was given back)
        self._idle: list[tuple[psycopg.Connection[tuple[Any, ...]], float]] = []
        self._lock = threading.Lock()
        self._schema_ready = False
        self._closed = False

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self._dsn, **self._kwargs)
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return conn

    def _take(self) -> psycopg.Connection[tuple[Any, ...]]:
        while True:
            with self._lock:
                if self._closed:
                    raise StoreError("the automations store is closed")
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if conn.closed:
                continue
            if time.monotonic() - since < self._ping_after:
                return conn
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()  # cut while idle: try the next, or open a new one
        return self._connect()

    def _give_back(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with self._lock:
            if not self._closed and not conn.closed and len(self._idle) < self._max_idle:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    @contextmanager
    def transaction(self, what: str = "a store call") -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A cursor inside one transaction: committed when the block ends, rolled back when it
        raises. ``what`` names the call in a ``StoreError``."""
        try:
            conn = self._take()
        except psycopg.Error as exc:
            raise store_error(exc, what) from None
        broken = False
        try:
            if not self._schema_ready:
                self._ensure_schema(conn)
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            # A failed connection is not lent again; a failed statement leaves it usable.
            broken = conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError)
            raise store_error(exc, what) from None
        except BaseException:
            broken = conn.closed or conn.broken
            raise
        finally:
            if broken:
                conn.close()
            else:
                self._give_back(conn)

    def _ensure_schema(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK_KEY])
            for statement in STATEMENTS:
                conn.execute(statement)
        self._schema_ready = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()
