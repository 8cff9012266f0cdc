"""Where the automations runtime's work runs besides its evaluation loop.

``BackgroundTasks`` holds the tasks the runtime starts and does not await at once (event
commits, announcements, action runs), so that ``idle`` and a shutdown can wait for them and a
failure is logged, not lost. ``WorkerThreads`` runs blocking store calls on threads of their
own: the runtime's store work and the API's each get a pool (built in ``collector/app.py``),
so a backlog of bookkeeping cannot keep a pause waiting for a thread, and neither queues
behind other users of asyncio's default pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")


class BackgroundTasks:
    """Tasks started and tracked until they end; one event loop owns them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("automation task failed", exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until every task (and every task those start) has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the tasks, then cancel what still runs."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


class WorkerThreads:
    """A small pool of named threads for blocking calls made from the event loop."""

    def __init__(self, threads: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    def close(self) -> None:
        """Stop taking work; what has not started is dropped (the runtime has stopped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
