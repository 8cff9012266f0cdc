"""``AutomationRuntime``: automations at run time inside ``herald serve`` (SPEC §7) — the
parts, started and stopped in order.

The parts, each with one job (``collector/app.py`` builds and wires them):

* ``EvaluationLoop`` (``evaluation.py``): committed events → the pure ``Evaluator`` →
  firings, with the watermark and the replay;
* ``FiringDispatcher`` (``dispatch.py``): firings → action runs through their automation's
  lane, announcements, outcomes;
* ``AutomationService`` (``service.py``): what the automations API does;
* ``EventEmitter`` (``emitter.py``): the runtime's events, through the ingest path.

**Restart.** ``start`` listens to commits, then restores the evaluator state, loads the
automations, resumes the firings whose announcement or actions did not finish, and replays
the events after the watermark; then the loop runs. So a restart neither misses nor repeats a
firing; an action interrupted mid-way runs again (at-least-once).

**Stop.** The step in progress finishes, running actions get the grace period (then are
cancelled, and resume after a restart), outcomes and the last state are stored, and the
resources the runtime was handed are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from collector.automations.background import BackgroundTasks
from collector.automations.dispatch import FiringDispatcher
from collector.automations.evaluation import CommitFeed, EvaluationLoop
from collector.automations.service import AutomationService

log = logging.getLogger(__name__)


class AutomationRuntime:
    """The automations runtime's lifecycle; ``service`` is what the API calls."""

    def __init__(
        self,
        evaluation: EvaluationLoop,
        dispatcher: FiringDispatcher,
        service: AutomationService,
        tasks: BackgroundTasks,
        *,
        commits: CommitFeed,
        close: Callable[[], Awaitable[None]],
        shutdown_grace_seconds: float = 5.0,
    ) -> None:
        self.evaluation = evaluation
        self.dispatcher = dispatcher
        self.service = service
        self._tasks = tasks
        self._commits = commits
        self._close = close
        self._grace = shutdown_grace_seconds
        self._main: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, *, background: bool = True) -> None:
        """Start evaluating: listen to commits, then (in the background) restore the state,
        replay since the watermark, resume unfinished firings and run the loop.

        ``background=False`` does the restart work now and runs no loop: the caller drives
        ``evaluation.step()`` (tests, with a ManualClock)."""
        # Listen before reading the replay range, so no commit falls between the two.
        self.evaluation.listen(self._commits)
        if background:
            self._main = asyncio.create_task(self._run(), name="automations")
            return
        try:
            await self._recover()
        finally:
            self.evaluation.recovered.set()

    async def _recover(self) -> None:
        state = await self.evaluation.read_state()
        await self.service.reload(checkpoint=False)
        self.evaluation.restore(state)
        await self.dispatcher.resume_unfinished()
        await self.evaluation.replay()

    async def _run(self) -> None:
        try:
            await self._recover()
        except Exception:
            log.exception("automations: restoring the state failed; starting from now")
        finally:
            self.evaluation.recovered.set()
        await self.evaluation.run()

    @property
    def running(self) -> bool:
        """The evaluation loop runs (restoring its state counts): started, not stopping, and
        not ended by an error."""
        return self._main is not None and not self._main.done() and not self._stopping

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the restart work (restore, replay, resume) is done."""
        await asyncio.wait_for(self.evaluation.recovered.wait(), timeout)

    async def idle(self) -> None:
        """Wait until every queued and running action (and announcement) has finished and
        its outcome is in the store."""
        await self._tasks.idle()
        await self.dispatcher.flush()

    async def stop(self) -> None:
        """Finish the current step, wait (up to the grace period) for running actions, save
        the state. Actions still running are cancelled and resume after a restart."""
        if self._stopping:
            return
        self._stopping = True
        self.dispatcher.stop()  # what waits stays `triggered` and is resumed after a restart
        self.evaluation.stop()
        if self._main is not None:
            try:
                await self._main
            except Exception:
                log.exception("the automations loop failed")
            self._main = None
        await self._tasks.drain(self._grace)
        await self.dispatcher.flush()
        await self.evaluation.save()
        await self._close()
