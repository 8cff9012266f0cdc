"""``FiringDispatcher``: from a firing to its action runs (SPEC §7, Prefect P§6.4).

* **Admission.** Before a firing is stored, its automation's lane (``collector.automations
  .lanes``: the rate limit, a bounded queue, fair and bounded concurrency) decides what its
  action runs will be. Runs the lane does not admit are stored ``skipped`` (or ``cancelled``,
  the automation is being paused) with the firing, emit no events and take no memory.
* **Announcement.** For each firing stored as new, ``herald.automation.triggered|resolved`` is
  queued for ingest before any of its runs' events, and the firing is marked announced once
  that is committed.
* **Runs.** Each admitted run waits in its lane, then runs with
  ``herald.automation.action.triggered`` and ``.executed|.failed|.cancelled`` events and an
  ``action_runs`` row. ``actions`` run on both triggered and resolved firings (Prefect's rule);
  ``actions_on_trigger``/``actions_on_resolve`` on one. Outcomes and "announced" marks are
  written in batches (``RunJournal``).
* **Restart.** ``resume_unfinished`` announces firings and queues the runs a stopped process
  left unfinished; runs of an automation paused or deleted since are cancelled. An action
  interrupted mid-way runs again (at-least-once), unless its outcome event was stored.
* **Pause and delete** (from the service): ``close_lane`` stops an automation's lane at once,
  ``cancel_waiting`` cancels what waits in it and records those runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from collector.automations.actions import ActionCall, ActionExecutor, Outcome, StopSignal
from collector.automations.background import BackgroundTasks, WorkerThreads
from collector.automations.emitter import EventEmitter
from collector.automations.events import (
    Cause,
    action_event,
    derived_id,
    firing_cause,
    follows_if_close,
    state_event,
    state_event_id,
)
from collector.automations.journal import RunJournal
from collector.automations.lanes import ActionLanes, Admission, effective_limit
from collector.clock import Clock
from collector.config import AutomationsConfig
from collector.domain.automation_records import ActionRun, Firing, NewFiring, StoredAutomation
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation
from collector.domain.events import ReceivedEvent
from collector.domain.self_metrics import NoMetrics, SelfMetrics

log = logging.getLogger(__name__)

MAX_CONCURRENT_ACTIONS = 64
# One automation's share: a hot automation cannot hold every slot, and after a pause at most
# this many of its runs are still in flight (they finish their current attempt).
MAX_CONCURRENT_ACTIONS_PER_AUTOMATION = 16
PAUSED = "the automation was paused"
DELETED = "the automation was deleted"

# Stores firings (with the evaluator state of their step); returns the ids that were new.
Record = Callable[[list[NewFiring]], Awaitable[set[UUID]]]


def _received_event(event: dict[str, Any], received: datetime) -> ReceivedEvent:
    return ReceivedEvent.model_validate({**event, "received": received})


@dataclass(slots=True)
class _Work:
    """A stored firing whose action runs go through the lanes: what each of them needs."""

    automation: Automation
    firing: Firing
    cause: Cause
    announcement: dict[str, Any]  # its herald.automation.triggered|resolved event
    created: datetime
    resumed: bool = False
    announced: bool = False
    _event: ReceivedEvent | None = None

    @property
    def announced_event(self) -> ReceivedEvent:
        # Built when a run first needs it: most firings of a runaway never start a run.
        if self._event is None:
            self._event = _received_event(self.announcement, self.created)
        return self._event


@dataclass(slots=True)
class _Queued:
    """One action run waiting in its automation's lane."""

    work: _Work
    run: ActionRun


def runs_for(firing: Firing, automation: Automation) -> list[ActionRun]:
    """The action runs a firing starts: ``actions`` plus ``actions_on_trigger`` for a
    triggered firing, ``actions`` plus ``actions_on_resolve`` for a resolved one."""
    phase = "trigger" if firing.kind == "triggered" else "resolve"
    lists = ("actions", "actions_on_trigger" if phase == "trigger" else "actions_on_resolve")
    return [
        ActionRun(
            id=derived_id("herald.action-run", firing.id, name, i),
            firing_id=firing.id,
            automation_id=automation.id,
            action_list=name,
            action_index=i,
            action_type=action.type,
            phase=phase,
        )
        for name in lists
        for i, action in enumerate(getattr(automation, name))
    ]


class FiringDispatcher:
    """Admits firings' action runs, announces firings, runs the actions, records outcomes."""

    def __init__(
        self,
        config: AutomationsConfig,
        store: AutomationStateStore,
        threads: WorkerThreads,
        executor: ActionExecutor,
        emitter: EventEmitter,
        tasks: BackgroundTasks,
        clock: Clock,
        *,
        metrics: SelfMetrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._config = config
        self._store = store
        self._threads = threads
        self._executor = executor
        self._emitter = emitter
        self._tasks = tasks
        self._clock = clock
        self._lanes: ActionLanes[_Queued] = ActionLanes(
            max_queued=config.max_queued_actions,
            max_running=MAX_CONCURRENT_ACTIONS,
            max_running_per_lane=MAX_CONCURRENT_ACTIONS_PER_AUTOMATION,
            execute=self._execute,
            spawn=tasks.spawn,
        )
        self._journal = RunJournal(self._write_runs)

    async def _write_runs(self, runs: Sequence[ActionRun], announced: Sequence[UUID]) -> None:
        await self._threads.run(self._store.update_runs, runs, announced)

    def waiting(self, automation_id: UUID) -> int:
        """How many of the automation's runs wait in its lane."""
        return self._lanes.waiting(automation_id)

    def stop(self) -> None:
        """Start nothing more: what waits stays ``triggered`` and is resumed after a restart."""
        self._lanes.stop()

    async def flush(self) -> None:
        """Wait until every outcome and announcement recorded so far is in the store."""
        await self._journal.flush()

    # -- firing → actions -------------------------------------------------------------------

    async def dispatch(
        self, firings: list[tuple[Firing, Automation]], record: Record
    ) -> list[Firing]:
        """Decide each firing's runs, store the firings with ``record``, then announce the
        new ones and queue their admitted runs. Returns the firings that were new."""
        # The lanes decide each firing's runs before it is stored (admitted, or skipped by
        # the rate limit or a full queue, or cancelled by a pause under way), so runs that
        # will not run are stored finished in the same transaction.
        now = self._clock.now()
        stamp = now.timestamp()
        items: list[NewFiring] = []
        admissions: list[Admission] = []
        for firing, automation in firings:
            runs = runs_for(firing, automation)
            admission = self._lanes.admit(
                automation.id, len(runs), effective_limit(automation, self._config), stamp
            )
            if admission.status is not None:
                for run in runs:
                    run.status, run.reason, run.finished = admission.status, admission.reason, now
            items.append(NewFiring(firing, state_event_id(firing), runs))
            admissions.append(admission)
        try:
            new = await record(items)
        except BaseException:
            for admission in admissions:
                self._lanes.release(admission)
            raise
        fired: list[Firing] = []
        started: list[tuple[_Work, NewFiring, Admission]] = []
        for (firing, automation), item, admission in zip(firings, items, admissions, strict=True):
            if firing.id not in new:  # re-derived after a restart: already acted on
                self._lanes.release(admission)
                continue
            fired.append(firing)
            cause = firing_cause(firing)
            work = _Work(automation, firing, cause, state_event(automation, firing, cause), now)
            started.append((work, item, admission))
        # Announcements are queued for ingest before any run's events.
        self._announce_firings([work for work, _, _ in started])
        cancelled: list[ActionRun] = []
        not_run: list[ActionRun] = []  # skipped (rate limit, full queue) or cancelled
        for work, item, admission in started:
            if admission.status is not None:
                not_run += item.runs
            elif not self._lanes.enqueue(admission, [_Queued(work, run) for run in item.runs]):
                cancelled += self._cancelled(item.runs, work.automation.id)
        if cancelled:
            self._journal.record(cancelled)
        if fired:
            self._metrics.firings(len(fired))
            for run in (*not_run, *cancelled):
                self._metrics.action_outcome(run.action_type, run.status)
        return fired

    def _cancelled(self, runs: list[ActionRun], automation_id: UUID) -> list[ActionRun]:
        """Mark waiting runs cancelled (the caller records them)."""
        reason = self._lanes.closed_reason(automation_id) or (
            "the automation was paused or deleted before the run could start"
        )
        now = self._clock.now()
        for run in runs:
            run.status, run.reason, run.finished = "cancelled", reason, now
        return runs

    def _announce_firings(self, works: list[_Work]) -> None:
        """Queue the firings' herald.automation.triggered|resolved events in one submission;
        mark them announced (in one batch) once committed."""
        fresh = [w for w in works if not w.announced]
        if not fresh:
            return

        def refused(index: int, message: str) -> None:
            log.warning(
                "automation %r: the event announcing firing %s is not valid, not stored: %s",
                fresh[index].automation.name,
                fresh[index].firing.id,
                message,
            )

        committed = self._emitter.submit_each([w.announcement for w in fresh], refused)
        self._tasks.spawn(self._mark_announced(committed, [w.firing.id for w in fresh]))

    async def _mark_announced(self, committed: Awaitable[None], ids: list[UUID]) -> None:
        await committed
        await self._journal.record(announced=ids)

    async def _execute(self, item: _Queued, stop: StopSignal) -> None:
        """Run one action run (its lane started it): the action.triggered event, the
        action, the outcome in ``action_runs`` (batched) and the outcome event."""
        work, run = item.work, item.run
        automation, firing, cause, resumed = work.automation, work.firing, work.cause, work.resumed
        announced = work.announced_event
        actions = getattr(automation, run.action_list)
        action = actions[run.action_index] if run.action_index < len(actions) else None
        now = self._clock.now()
        # `occurred` of action.triggered is when the run was recorded, so re-sending it
        # after a restart dedupes.
        created = run.created or now
        run.started = now
        triggered_id = derived_id("herald.automation.action", run.id, "triggered")
        finished_id = derived_id("herald.automation.action", run.id, "finished")
        if resumed:
            # A run left 'triggered' by a stopped process: if it got as far as announcing
            # its outcome, take that instead of running the action again.
            name = await self._threads.run(self._store.stored_event_name, finished_id, created)
            if name is not None:
                run.status = name.rsplit(".", 1)[-1]
                run.reason = run.reason or "recorded before a restart"
                run.finished = now
                self._journal.record([run])
                return
        base = {
            "action_index": run.action_index,
            "action_type": run.action_type,
            "action_list": run.action_list,
            "phase": run.phase,
            "invocation": str(run.id),
            "firing_id": str(firing.id),
        }
        self._emitter.submit(
            [
                action_event(
                    "triggered",
                    automation,
                    firing,
                    cause,
                    event_id=triggered_id,
                    occurred=created,
                    payload=base,
                    state_event_id=announced.id,
                    follows=follows_if_close(firing.triggering_event, created),
                )
            ]
        )
        if action is None or action.type != run.action_type:
            outcome = Outcome("failed", "the automation changed before the action could run")
        else:
            # actions_on_trigger/resolve see the herald.automation.* event as `event`
            # (Prefect's rule); `actions` see what triggered the firing.
            event = None if run.action_list == "actions" else announced
            trigger_event = firing.triggering_event
            if trigger_event is not None and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "automation %r: %s[%d] starts %.1f ms after its event was received",
                    automation.name,
                    run.action_list,
                    run.action_index,
                    (self._clock.now() - trigger_event.received).total_seconds() * 1000,
                )
            outcome = await self._executor.run(
                ActionCall(
                    automation=automation,
                    firing=firing,
                    action=action,
                    where=f"{run.action_list}[{run.action_index}]",
                    run_id=run.id,
                    event=event,
                    cause=cause,
                    resumed=resumed,
                    stop=stop,
                )
            )
        run.status = outcome.status
        run.reason = outcome.reason
        run.detail = outcome.detail
        run.response_status = outcome.response_status
        run.finished = self._clock.now()
        self._metrics.action_outcome(run.action_type, outcome.status)
        if outcome.status == "failed":
            log.warning(
                "automation %r: %s %s failed: %s",
                automation.name,
                run.action_list,
                run.action_type,
                outcome.reason,
            )
        self._journal.record([run])
        payload = {**base, **outcome.detail}
        if outcome.reason:
            payload["reason"] = outcome.reason
        self._emitter.submit(
            [
                action_event(
                    outcome.status,
                    automation,
                    firing,
                    cause,
                    event_id=finished_id,
                    occurred=run.finished,
                    payload=payload,
                    state_event_id=announced.id,
                    targets=outcome.targets,
                    follows=triggered_id,
                )
            ]
        )

    # -- restart ----------------------------------------------------------------------------

    async def resume_unfinished(self) -> None:
        """Announce firings and queue the action runs a stopped process left unfinished
        (``triggered``); runs of an automation paused or deleted since are cancelled.
        Cancelled and skipped runs are finished: they are never resumed."""
        automations: dict[UUID, StoredAutomation | None] = {}
        cancelled: list[ActionRun] = []
        announced: list[UUID] = []
        resumed = 0
        now = self._clock.now()
        for item in await self._threads.run(self._store.unfinished):
            automation_id = item.firing.automation_id
            if automation_id not in automations:
                automations[automation_id] = await self._threads.run(
                    self._store.get_automation, automation_id
                )
            stored = automations[automation_id]
            if stored is None:
                for run in item.runs:
                    run.status, run.reason, run.finished = "cancelled", DELETED, now
                cancelled += item.runs
                announced.append(item.firing.id)  # nothing to announce it as any more
                continue
            automation = stored.automation
            cause = firing_cause(item.firing)
            work = _Work(
                automation,
                item.firing,
                cause,
                state_event(automation, item.firing, cause),
                now,
                resumed=True,
                announced=item.announced,
            )
            self._announce_firings([work])
            if not automation.enabled:
                for run in item.runs:
                    run.status, run.reason, run.finished = "cancelled", PAUSED, now
                cancelled += item.runs
                continue
            resumed += len(item.runs)
            self._lanes.resume(automation_id, [_Queued(work, run) for run in item.runs])
        if cancelled or announced:
            await self._journal.record(cancelled, announced)
        if resumed or cancelled:
            log.info(
                "automations: resuming %d action run(s) left unfinished; %d cancelled "
                "(automation paused or deleted since)",
                resumed,
                len(cancelled),
            )

    # -- pause, delete ----------------------------------------------------------------------

    def prune(self, automation_ids: set[UUID]) -> None:
        """Forget the lanes of automations that no longer exist."""
        self._lanes.prune(automation_ids)

    def closed_for(self, automation_id: UUID) -> str | None:
        """Why the automation's lane is closed (a pause or delete under way), or None."""
        return self._lanes.closed_reason(automation_id)

    def close_lane(self, automation_id: UUID, reason: str) -> None:
        """None of the automation's runs starts from now on (new admissions are cancelled)."""
        self._lanes.close(automation_id, reason)

    def restore_lane(self, automation_id: UUID, previous: str | None) -> None:
        self._lanes.restore(automation_id, previous)

    def open_lane(self, automation_id: UUID) -> None:
        self._lanes.open(automation_id)

    async def cancel_waiting(
        self, automation_id: UUID, settle: Callable[[], Awaitable[None]]
    ) -> list[ActionRun]:
        """Cancel the runs waiting in the automation's (closed) lane and signal those in
        flight; ``settle`` lets firings being stored meanwhile find the lane closed and record
        their runs so. The cancelled runs are recorded before this returns."""
        waiting = self._lanes.cancel(automation_id)
        await settle()
        runs = self._cancelled([q.run for q in waiting], automation_id)
        await self._journal.record(runs)
        return runs
