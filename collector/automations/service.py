"""``AutomationService``: what the automations API does (SPEC §7) — create, update, delete,
pause/resume, read, history and backtests — behind ``collector.server.automations_grpc``.

Writes validate, store, emit ``herald.automation.created|updated|deleted`` and reload the
evaluation loop (unchanged triggers keep their state: divergence 1). They work even when
evaluation is turned off. Pause and delete stop the automation's lane first and cancel what
waits in it. The API's store work runs on threads of its own, so a backlog of the runtime's
bookkeeping cannot keep a pause waiting for a thread (issue 9).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from collector.automations.background import WorkerThreads
from collector.automations.backtest import Progress, backtest
from collector.automations.dispatch import DELETED, PAUSED, FiringDispatcher
from collector.automations.emitter import EventEmitter
from collector.automations.evaluation import EvaluationLoop
from collector.automations.events import Cause, crud_event
from collector.automations.templates import validate_automation_templates
from collector.clock import Clock
from collector.domain.automation_records import Firing, StoredAutomation
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation, parse_automation
from collector.errors import InvalidAutomation, NotFound

log = logging.getLogger(__name__)

# A CRUD call waits this long for its herald.automation.* event to be committed; behind a long
# ingest queue the answer does not wait for it (it is committed in the background, in order).
CRUD_EVENT_WAIT_SECONDS = 0.25
# A pause waits this long at most for firings being stored to record their runs cancelled.
PIPELINE_WAIT_SECONDS = 1.0
NO_CAUSE = Cause()  # what a user's own request carries (immutable, so a shared default)


def validate_automation(data: Any) -> Automation:
    """Parse automation JSON and check its templates; ``InvalidAutomation`` names the field."""
    automation = parse_automation(data)
    validate_automation_templates(automation)
    return automation


class AutomationService:
    """Automations CRUD, reads and backtests; see the module docstring."""

    def __init__(
        self,
        store: AutomationStateStore,
        threads: WorkerThreads,
        evaluation: EvaluationLoop,
        dispatcher: FiringDispatcher,
        emitter: EventEmitter,
        clock: Clock,
    ) -> None:
        self._store = store
        self._threads = threads
        self._evaluation = evaluation
        self._dispatcher = dispatcher
        self._emitter = emitter
        self._clock = clock
        self._crud = asyncio.Lock()
        self._enabled: dict[UUID, bool] = {}  # as last loaded: id → enabled

    async def reload(self, *, checkpoint: bool = True) -> None:
        """Hand the stored automations to the evaluation loop."""
        stored = await self._threads.run(self._store.list_automations)
        self._load([s.automation for s in stored], checkpoint)

    def _load(self, automations: list[Automation], checkpoint: bool) -> None:
        self._enabled = {a.id: a.enabled for a in automations}
        self._dispatcher.prune({a.id for a in automations})
        self._evaluation.load(automations, checkpoint=checkpoint)

    async def follow_store(self) -> None:
        """Take changes another collector made to the automations (the leader of a cluster
        learns of them so): the lanes of automations paused or deleted there are closed and
        what waits in them cancelled, as a pause made here does; resumed ones open again;
        then the new set is evaluated."""
        async with self._crud:
            stored = await self._threads.run(self._store.list_automations)
            now = {s.automation.id: s.automation.enabled for s in stored}
            for automation_id, enabled in self._enabled.items():
                if enabled and not now.get(automation_id, False):
                    reason = PAUSED if automation_id in now else DELETED
                    self._dispatcher.close_lane(automation_id, reason)
                    await self._dispatcher.cancel_waiting(
                        automation_id, partial(self._evaluation.settle, PIPELINE_WAIT_SECONDS)
                    )
            for automation_id, enabled in now.items():
                if enabled and self._dispatcher.closed_for(automation_id) is not None:
                    self._dispatcher.open_lane(automation_id)
            self._load([s.automation for s in stored], True)

    async def _announce(self, kind: str, stored: StoredAutomation, cause: Cause = NO_CAUSE) -> None:
        event = crud_event(kind, stored.automation, stored.to_dict(), self._clock.now(), cause)
        committed = self._emitter.submit([event])
        # Normally committed before the call answers; behind a long ingest queue (a runaway
        # automation's events) the answer does not wait: the event follows, in order.
        done, _ = await asyncio.wait({committed}, timeout=CRUD_EVENT_WAIT_SECONDS)
        if done:
            committed.result()

    async def _write_stopping(
        self, automation_id: UUID, reason: str | None, write: Callable[[], StoredAutomation]
    ) -> StoredAutomation:
        """Run a CRUD write. With a ``reason`` (pause, delete, a PUT that disables) the
        automation's lane is closed first — none of its runs starts from this moment — and
        once the write is stored, what waits in the lane is cancelled (and recorded so before
        this returns). Without one, the lane is open again. A failed write leaves the lane as
        it was."""
        dispatcher = self._dispatcher
        previous = dispatcher.closed_for(automation_id)
        if reason is not None:
            dispatcher.close_lane(automation_id, reason)
        try:
            stored = await self._threads.run(write)
        except BaseException:
            dispatcher.restore_lane(automation_id, previous)
            raise
        if reason is None:
            dispatcher.open_lane(automation_id)
            return stored
        # Firings evaluated before the close and being stored now (at most a few pipelined
        # steps) find the lane cancelled and record their runs so: let them, briefly, so
        # that no run of the automation is left waiting when the call answers.
        runs = await dispatcher.cancel_waiting(
            automation_id, partial(self._evaluation.settle, PIPELINE_WAIT_SECONDS)
        )
        if runs:
            log.info(
                "automation %r: %d waiting action run(s) cancelled (%s)",
                stored.automation.name,
                len(runs),
                reason,
            )
        return stored

    async def create(self, data: Any) -> StoredAutomation:
        """Validate and store a new automation (an ``id`` in ``data`` is kept if free)."""
        automation = validate_automation(data)
        async with self._crud:
            stored = await self._threads.run(
                self._store.insert_automation, automation, self._clock.now()
            )
            await self.reload()
        await self._announce("created", stored)
        return stored

    async def update(self, automation_id: UUID, data: Any) -> StoredAutomation:
        """Replace an automation as a whole (PUT). Triggers that did not change keep their
        bucket state (divergence 1). Disabling it cancels its waiting runs, as a pause does."""
        if isinstance(data, dict):
            given = data.get("id")
            if given is not None and str(given) != str(automation_id):
                raise InvalidAutomation(
                    f"id: {given} does not match the automation's id {automation_id}"
                )
            data = {**data, "id": str(automation_id)}
        automation = validate_automation(data)
        async with self._crud:
            stored = await self._write_stopping(
                automation_id,
                None if automation.enabled else PAUSED,
                partial(self._store.replace_automation, automation, self._clock.now()),
            )
            await self.reload()
        await self._announce("updated", stored)
        return stored

    async def set_enabled(
        self, automation_id: UUID, enabled: bool, cause: Cause = NO_CAUSE
    ) -> StoredAutomation:
        """Pause (False) or resume (True) an automation (PATCH ``{"enabled": …}``; also the
        pause-/resume-automation actions, with their ``cause``). A pause takes effect at
        once: nothing more of it starts, and its waiting runs are cancelled (runs in flight
        finish their current attempt and make no further one)."""
        async with self._crud:
            current = await self.read(automation_id)
            # Re-validated, as Prefect does: a PATCH cannot enable an invalid automation.
            automation = validate_automation(
                {**current.automation.model_dump(mode="json"), "enabled": enabled}
            )
            stored = await self._write_stopping(
                automation_id,
                None if enabled else PAUSED,
                partial(self._store.replace_automation, automation, self._clock.now()),
            )
            await self.reload()
        await self._announce("updated", stored, cause)
        return stored

    async def delete(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation; its firings and action runs stay as history, its waiting
        runs are cancelled."""
        async with self._crud:
            stored = await self._write_stopping(
                automation_id, DELETED, partial(self._store.delete_automation, automation_id)
            )
            await self.reload()
        await self._announce("deleted", stored)
        return stored

    # -- reads ------------------------------------------------------------------------------

    async def read(self, automation_id: UUID) -> StoredAutomation:
        stored = await self._threads.run(self._store.get_automation, automation_id)
        if stored is None:
            raise NotFound(f"Automation with id '{automation_id}' not found.")
        return stored

    async def find(self, name: str) -> list[StoredAutomation]:
        found = await self._threads.run(self._store.find_by_name, name)
        if not found:
            raise NotFound(f"Automation '{name}' not found.")
        return found

    async def list_automations(self) -> list[StoredAutomation]:
        return await self._threads.run(self._store.list_automations)

    async def history(
        self, automation_id: UUID | None, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._threads.run(self._store.history, automation_id, limit, status)

    async def run_counts(self, automation_id: UUID | None) -> dict[str, int]:
        """How many action runs (of one automation, or all) are in each status."""
        return await self._threads.run(self._store.run_counts, automation_id)

    def backtest(
        self,
        automation: Automation,
        since: datetime,
        until: datetime,
        *,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[list[Firing], int, bool]:
        """Replay stored history through ``automation``'s trigger (``backtest.backtest``).
        Blocking, and long on a big range: call it from a worker thread."""
        return backtest(self._store, automation, since, until, progress=progress, stop=stop)
