"""``LeaderRole``: the automations evaluator of a cluster, run only while this collector leads.

Several collectors share one lake and one automations state (DuckLake backend); exactly one of
them — the holder of the leader lock (``collector/cluster/leadership.py``, wired in
``collector/app.py``) — evaluates automations and runs their actions. This role is what the
election drives:

* **elected(term)** builds a fresh ``AutomationRuntime`` whose store writes are fenced by the
  term, and starts it: it restores the evaluator state, resumes the firings the previous
  leader left unfinished, replays the lake after the stored watermark, then follows the lake.
* **deposed()** stops it at once: nothing more is evaluated or started, actions in flight get
  the shutdown grace, and a write it still attempts is refused by the fence if a successor
  leads already.
* While leading it watches the automations' revision in the shared state, so a change made
  through any collector (create, update, pause, delete) reaches the evaluator within
  ``poll_seconds`` (``AutomationService.follow_store``).

Every collector, leader or not, serves the automations API from its own runtime (never
started), whose reads and writes go to the shared state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from collector.automations.runtime import AutomationRuntime

log = logging.getLogger(__name__)

REVISION_POLL_SECONDS = 1.0


class LeaderRole:
    """Starts an evaluating runtime when elected, stops it when deposed."""

    def __init__(
        self,
        build: Callable[[int], AutomationRuntime],
        revision: Callable[[], int],
        *,
        evaluate: bool = True,
        poll_seconds: float = REVISION_POLL_SECONDS,
    ) -> None:
        self._build = build
        self._evaluate = evaluate  # automations.enabled: off, the leader only runs the upkeep
        self._revision = revision
        self._poll = poll_seconds
        self._runtime: AutomationRuntime | None = None
        self._watch: asyncio.Task[None] | None = None
        self.term: int | None = None
        # The automations revision the evaluating runtime has taken (tests wait on it).
        self.applied_revision: int | None = None

    @property
    def leading(self) -> bool:
        """This collector leads now: the leader-only jobs (lake upkeep, retention) ask this."""
        return self.term is not None

    @property
    def runtime(self) -> AutomationRuntime | None:
        """The evaluating runtime while leading."""
        return self._runtime

    async def elected(self, term: int) -> None:
        await self.deposed()  # never two runtimes
        self.term = term
        if not self._evaluate:
            return
        seen = await asyncio.to_thread(self._revision)
        self.applied_revision = seen
        runtime = self._build(term)
        self._runtime = runtime
        await runtime.start()
        self._watch = asyncio.create_task(self._follow(runtime, seen), name="automations-follow")
        log.info("automations: evaluating as the cluster's leader (term %d)", term)

    async def deposed(self) -> None:
        runtime, self._runtime, self.term = self._runtime, None, None
        self.applied_revision = None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            try:
                await watch
            except asyncio.CancelledError:
                pass
        if runtime is not None:
            await runtime.stop()
            log.info("automations: stopped evaluating (no longer the leader)")

    async def _follow(self, runtime: AutomationRuntime, seen: int) -> None:
        try:
            await runtime.wait_ready(timeout=600)
        except TimeoutError:
            log.warning("automations: the leader's restart work is taking long")
        while True:
            await asyncio.sleep(self._poll)
            try:
                now = await asyncio.to_thread(self._revision)
                if now != seen:
                    await runtime.service.follow_store()
                    seen = self.applied_revision = now
            except Exception:
                log.exception("automations: taking changes made by other collectors failed")
