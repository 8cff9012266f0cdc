"""``AutomationRunner``: automations at run time inside ``herald serve`` (SPEC §7).

It owns the evaluation loop and everything around the pure ``Evaluator``:

* **Input.** The writer calls ``_on_commit`` after every commit; the columns go to an in-memory
  queue (bounded: past ``max_backlog_events`` the runner stops queueing and later catches up
  from the store). Only committed events are evaluated.
* **Evaluation** runs on the event loop, in slices of at most ``STEP_EVENTS`` events (measured:
  a separate evaluator thread lost more to GIL hand-offs than it saved). Events no trigger can
  care about are skipped by name (they only move the events clock). ``tick`` runs every
  ``automations.evaluation_interval_seconds`` and when ``next_due()`` says a window ends.
* **Persistence.** New firings, their action runs, the evaluator state and the watermark are
  written in one transaction before any action runs; firing ids are deterministic, so a firing
  derived twice is stored (and acted on) once. In the server's loop that write overlaps with
  evaluating the next slice (in order, at most ``MAX_PENDING_STORES`` behind). The
  evaluator's seen-ids (for re-sent duplicates) are saved every ``SEEN_CHECKPOINT_SECONDS``
  and on shutdown only: they are large and not needed for correctness of the replay.
* **Watermark.** Events are evaluated in (received, occurred, id) order — commit order, since
  every submit to the writer happens on the one event loop, which stamps ``received`` — and the
  key of the last one is the watermark. After a restart the state is restored and exactly the
  events after the watermark are replayed from the store; firings whose announcement or
  actions did not finish are resumed. So a restart neither misses nor repeats a firing; an
  action interrupted mid-way runs again (at-least-once).
* **Firing → actions** (P§6.4): ``herald.automation.triggered|resolved`` is stored, then each
  action run goes through its automation's lane (``collector.automations.lanes``: the rate
  limit, a bounded queue, fair and bounded concurrency) and runs with
  ``herald.automation.action.triggered`` and ``.executed|.failed|.cancelled`` events and an
  ``action_runs`` row. Runs the lane does not admit are stored ``skipped`` (or ``cancelled``)
  with the firing, emit no events and take no memory. ``actions`` run on both triggered and
  resolved firings (Prefect's rule); ``actions_on_trigger``/``actions_on_resolve`` on one.
  Outcomes and "announced" marks are written in batches (``RunJournal``).
* **CRUD**: create/update/delete/pause/resume validate, store, emit
  ``herald.automation.created|updated|deleted`` and reload the evaluator (unchanged triggers
  keep their state: divergence 1). These work even when evaluation is turned off. Pause and
  delete stop the automation's lane first and cancel what waits in it. CRUD and API reads use
  their own worker threads, and the runner's store work two others: a backlog of action
  bookkeeping can no longer keep a pause waiting for a thread (issue 9).

The loop guard is in ``collector.automations.events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import httpx
import orjson

from collector.automations.actions import ActionCall, ActionExecutor, Outcome, StopSignal
from collector.automations.evaluator import Evaluator
from collector.automations.events import (
    Cause,
    action_event,
    crud_event,
    derived_id,
    firing_cause,
    follows_if_close,
    guard_skips,
    state_event,
    state_event_id,
)
from collector.automations.journal import RunJournal
from collector.automations.lanes import ActionLanes, Admission, effective_limit
from collector.automations.templates import TemplateEngine, validate_automation_templates
from collector.clock import Clock, SystemClock, now_us
from collector.config import AutomationsConfig
from collector.domain.automation_records import (
    ActionRun,
    EvaluatorState,
    EventKey,
    Firing,
    NewFiring,
    StoredAutomation,
)
from collector.domain.automations import Automation, parse_automation
from collector.domain.columns import EventColumns
from collector.domain.events import Limits, ReceivedEvent, us_to_datetime
from collector.errors import (
    Busy,
    HeraldError,
    InvalidAutomation,
    InvalidEvent,
    NotFound,
    StoreError,
)
from collector.mapping.native import json_events_to_columns
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter

log = logging.getLogger(__name__)

# A watermark older than this is not replayed from (only possible when evaluation was turned
# off in the config for a long time; the server cannot have taken events while it was down).
MAX_REPLAY_US = 3_600_000_000
REPLAY_CHUNK = 2_000
STEP_EVENTS = 2_000  # events evaluated per step: keeps each loop stall to a few ms
MAX_BACKLOG_EVENTS = 200_000
MAX_CONCURRENT_ACTIONS = 64
# One automation's share: a hot automation cannot hold every slot, and after a pause at most
# this many of its runs are still in flight (they finish their current attempt).
MAX_CONCURRENT_ACTIONS_PER_AUTOMATION = 16
# A CRUD call waits this long for its herald.automation.* event to be committed; behind a long
# writer queue the answer does not wait for it (it is committed in the background, in order).
CRUD_EVENT_WAIT_SECONDS = 0.25
# A pause waits this long at most for firings being stored to record their runs cancelled.
PIPELINE_WAIT_SECONDS = 1.0
PAUSED = "the automation was paused"
DELETED = "the automation was deleted"
MAX_PENDING_STORES = 4  # pipelined steps whose firings/state are not stored yet
# The seen-ids are most of the state's size (~700 KB at 10k entries): saved this often only.
SEEN_CHECKPOINT_SECONDS = 10.0
EMIT_RETRY_SECONDS = 30.0
# How far back a follower's leader is looked up in the store (Prefect keeps seen ids 30 min).
LEADER_WINDOW_US = 30 * 60 * 1_000_000
# Resumed work looks this far back for what it already stored (the default retention).
RESUME_LOOKBACK = timedelta(days=7)
NO_CAUSE = Cause()  # what a user's own request carries (immutable, so a shared default)
_ZERO_ID = "00000000-0000-0000-0000-000000000000"

Batch = tuple[EventColumns, list[int]]
R = TypeVar("R")


@dataclass(slots=True)
class _Step:
    """What one evaluation step produced."""

    firings: list[tuple[Firing, Automation]]
    state: EvaluatorState | None
    seq: int
    next_due: datetime | None


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


def validate_automation(data: Any) -> Automation:
    """Parse automation JSON and check its templates; ``InvalidAutomation`` names the field."""
    automation = parse_automation(data)
    validate_automation_templates(automation)
    return automation


class AutomationRunner:
    """Evaluates automations against committed events and runs their actions."""

    def __init__(
        self,
        store: EventStore,
        writer: BatchWriter,
        config: AutomationsConfig,
        limits: Limits,
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        backoff_base: float | None = None,
        shutdown_grace_seconds: float = 5.0,
        max_backlog_events: int = MAX_BACKLOG_EVENTS,
    ) -> None:
        self.config = config
        self.db = AutomationStore(store)
        self._writer = writer
        self._limits = limits
        self._clock = clock or SystemClock()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(follow_redirects=False)
        self._grace = shutdown_grace_seconds
        self._max_backlog = max_backlog_events
        self._templates = TemplateEngine(config.template_timeout_seconds)
        self._executor = ActionExecutor(
            config,
            self._clock,
            http=self._http,
            emit=self._store_events,
            set_enabled=self._set_enabled_by_action,
            templates=self._templates,
            **({"backoff_base": backoff_base} if backoff_base is not None else {}),
        )
        self._evaluator = Evaluator(
            self._clock, leader_processed=self._leader_processed, skip=guard_skips
        )
        self._automations: dict[UUID, Automation] = {}  # enabled ones, as loaded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[Batch] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._lagging = False  # the backlog overflowed: catch up from the store
        self._watermark: EventKey | None = None  # the last event evaluated (or skipped)
        self._skip_through: EventKey | None = None  # queued events a replay already covered
        self._current_received_us = 0
        self._current_ids: set[str] = set()
        self._seq = 0
        self._stored_seq = 0
        self._last_core: bytes = b""
        self._last_seen: bytes = b""
        self._last_watermark: EventKey | None = None
        self._force_checkpoint = False
        self._next_due: datetime | None = None
        self._crud = asyncio.Lock()
        self._persist = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Own threads: the API's (CRUD, reads) never queue behind the runner's store work,
        # and neither queues behind other users of asyncio's default pool.
        self._api_pool = ThreadPoolExecutor(2, thread_name_prefix="herald-automations-api")
        self._store_pool = ThreadPoolExecutor(2, thread_name_prefix="herald-automations")
        self._lanes: ActionLanes[_Queued] = ActionLanes(
            max_queued=config.max_queued_actions,
            max_running=MAX_CONCURRENT_ACTIONS,
            max_running_per_lane=MAX_CONCURRENT_ACTIONS_PER_AUTOMATION,
            execute=self._execute,
            spawn=self._spawn,
        )
        self._journal = RunJournal(self._write_runs)
        self._persisting: deque[asyncio.Task[list[Firing]]] = deque()  # pipelined, in order
        self._main: asyncio.Task[None] | None = None
        self._recovered = asyncio.Event()
        self._stopping = False
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Start evaluating: listen to commits, then (in the background) restore the state,
        replay since the watermark, resume unfinished firings and run the loop.

        ``background=False`` does the restart work now and runs no loop: the caller drives
        ``step()`` (tests, with a FakeClock)."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        # Listen before reading the replay range, so no commit falls between the two.
        self._writer.add_listener(self._on_commit)
        if background:
            self._main = asyncio.create_task(self._run(), name="automations")
            return
        try:
            await self._recover()
        finally:
            self._recovered.set()

    async def idle(self) -> None:
        """Wait until every queued and running action (and announcement) has finished and
        its outcome is in the store."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._journal.flush()

    async def _api(self, fn: Callable[..., R], *args: Any) -> R:
        """Blocking store work of the API (CRUD, reads) on the API's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._api_pool, partial(fn, *args))

    async def _store(self, fn: Callable[..., R], *args: Any) -> R:
        """Blocking store work of the runner (firings, state, replay) on its threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._store_pool, partial(fn, *args)
        )

    async def _write_runs(self, runs: Sequence[ActionRun], announced: Sequence[UUID]) -> None:
        await self._store(self.db.update_runs, runs, announced)

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the restart work (restore, replay, resume) is done."""
        await asyncio.wait_for(self._recovered.wait(), timeout)

    async def stop(self) -> None:
        """Finish the current step, wait (up to the grace period) for running actions, save
        the state. Actions still running are cancelled and resume after a restart."""
        if self._stopping:
            return
        self._stopping = True
        self._lanes.stop()  # what waits stays `triggered` and is resumed after a restart
        self._wakeup.set()
        if self._main is not None:
            try:
                await self._main
            except Exception:
                log.exception("the automations loop failed")
            self._main = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self._journal.flush()
        if self._started and self._recovered.is_set():
            try:
                await self._flush()
                await self._persist_and_dispatch(
                    self._finish_step([], checkpoint=True, save_seen=True)
                )
            except HeraldError as exc:
                log.warning("could not save the automations state: %s", exc)
        self._templates.close()
        if self._own_http:
            await self._http.aclose()
        self._api_pool.shutdown(wait=False, cancel_futures=True)
        self._store_pool.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("automation task failed", exc_info=task.exception())

    # -- input ------------------------------------------------------------------------------

    def _on_commit(self, cols: EventColumns, received_us: list[int]) -> None:
        """Writer-thread callback: hand the committed columns to the loop."""
        loop = self._loop
        if loop is not None and not self._stopping:
            loop.call_soon_threadsafe(self._enqueue, cols, received_us)

    def _enqueue(self, cols: EventColumns, received_us: list[int]) -> None:
        if self._lagging or self._stopping:
            return  # catching up from the store anyway
        if self._queued_events + len(cols) > self._max_backlog:
            # Memory stays bounded: drop this batch and what follows, re-read them from the
            # store (everything after the watermark) once the queue is worked off.
            self._lagging = True
            log.warning(
                "automations fell behind by %d events; catching up from the store",
                self._queued_events,
            )
        else:
            self._queue.append((cols, received_us))
            self._queued_events += len(cols)
        self._wakeup.set()

    def _take(self, limit: int = STEP_EVENTS) -> list[Batch]:
        """Up to about ``limit`` queued events (whole commits; at least one)."""
        batches: list[Batch] = []
        taken = 0
        while self._queue and (not batches or taken + len(self._queue[0][0]) <= limit):
            cols, received = self._queue.popleft()
            batches.append((cols, received))
            taken += len(cols)
        self._queued_events -= taken
        return batches

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._recover()
        except Exception:
            log.exception("automations: restoring the state failed; starting from now")
        finally:
            self._recovered.set()
        interval = self.config.evaluation_interval_seconds
        next_tick = loop.time()
        last_checkpoint = last_seen = loop.time()
        while not self._stopping:
            delay = next_tick - loop.time()
            if self._next_due is not None:
                delay = min(delay, (self._next_due - self._clock.now()).total_seconds())
            if not self._queue and not self._lagging:
                # At least a few ms: a due time that a tick cannot clear must not spin.
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.005))
                except TimeoutError:
                    pass
                if self._stopping:
                    break
            now = loop.time()
            due = self._next_due is not None and self._next_due <= self._clock.now()
            tick = now >= next_tick or due
            if tick:
                next_tick = now + interval
            checkpoint = now - last_checkpoint >= interval
            save_seen = now - last_seen >= SEEN_CHECKPOINT_SECONDS
            try:
                await self.step(
                    tick=tick, checkpoint=checkpoint, save_seen=save_seen, pipelined=True
                )
                if checkpoint:
                    last_checkpoint = now
                if save_seen:
                    last_seen = now
            except Exception:
                log.exception("automation evaluation step failed")
                await asyncio.sleep(min(interval, 1.0))
            await asyncio.sleep(0)  # let ingest run between slices
        # Whatever was committed before the stop is evaluated now rather than replayed later.
        while self._queue:
            try:
                await self.step(tick=False)
            except Exception:
                log.exception("automation evaluation step failed")
                break
        await self._flush()

    async def step(
        self,
        *,
        tick: bool,
        checkpoint: bool = False,
        save_seen: bool = False,
        pipelined: bool = False,
    ) -> list[Firing]:
        """One round: evaluate a slice of what is queued (and ``tick`` if asked), persist,
        dispatch. Returns the firings that were new. Tests call it with a FakeClock.

        ``pipelined`` (the server's loop): storing and dispatching go on in the background,
        in order, while the next slice is evaluated; nothing is returned."""
        batches = self._take()
        started = time.perf_counter()
        firings: list[Firing] = []
        for cols, received in batches:
            firings += self._feed(cols, received)
        if tick:
            firings += self._evaluator.tick(self._clock.now())
        result = self._finish_step(firings, checkpoint, save_seen)
        self._next_due = result.next_due
        fired: list[Firing] = []
        if pipelined:
            if result.firings or result.state is not None:
                self._persisting.append(
                    asyncio.create_task(self._persist_logged(result, len(firings), started))
                )
            # Bounded: a stalled store slows evaluation down instead of piling up firings.
            while len(self._persisting) > MAX_PENDING_STORES or (
                self._persisting and self._persisting[0].done()
            ):
                await self._persisting.popleft()
        else:
            fired = await self._persist_logged(result, len(firings), started)
        if self._lagging and not self._queue:
            await self._replay(catch_up=True)
        return fired

    async def _persist_logged(self, result: _Step, events: int, started: float) -> list[Firing]:
        evaluated = time.perf_counter()
        fired = await self._persist_and_dispatch(result)
        if result.firings or result.state is not None:
            log.debug(
                "automations step: %d firings, evaluate %.1f ms, store %.1f ms%s",
                len(result.firings),
                (evaluated - started) * 1000,
                (time.perf_counter() - evaluated) * 1000,
                " (with state)" if result.state is not None else "",
            )
        return fired

    async def _flush(self) -> None:
        """Wait for every pipelined store (firings are never dropped half-way)."""
        while self._persisting:
            await self._persisting.popleft()

    def _finish_step(
        self, firings: list[Firing], checkpoint: bool, save_seen: bool = False
    ) -> _Step:
        """Snapshot the state when firings need it stored with them, or at a checkpoint (and
        only if it changed); pair firings with their automations."""
        force = self._force_checkpoint
        self._force_checkpoint = False
        state = None
        if firings or checkpoint or force or save_seen:
            core = orjson.dumps(self._evaluator.state_snapshot(include_seen=False))
            seen: bytes | None = None
            if save_seen:
                seen = orjson.dumps(self._evaluator.seen_snapshot())
                if seen == self._last_seen:
                    seen = None
            changed = core != self._last_core or self._watermark != self._last_watermark
            if firings or changed or seen is not None:
                state = EvaluatorState(core, self._watermark, seen)
                self._last_core, self._last_watermark = core, self._watermark
                if seen is not None:
                    self._last_seen = seen
        self._seq += 1
        paired = [
            (f, self._automations[f.automation_id])
            for f in firings
            if f.automation_id in self._automations
        ]
        return _Step(paired, state, self._seq, self._evaluator.next_due())

    def _feed(self, cols: EventColumns, received: list[int], replay: bool = False) -> list[Firing]:
        """Evaluate committed events in (received, occurred, id) order — the order a replay
        reads them in, so a replay re-derives the same firings.

        Replayed events count as seen when they were received (no tick runs during a replay,
        and once it is done the runner is caught up), so a restart does not push proactive
        windows back by the downtime. Queued events a replay already evaluated are skipped."""
        n = len(cols)
        if not n:
            return []
        evaluator = self._evaluator
        occurred_us = cols.occurred_us
        ids = cols.ids
        names = cols.names
        order = sorted(range(n), key=lambda i: (received[i], occurred_us[i], ids[i]))
        out: list[Firing] = []
        skipped_max: int | None = None
        last_received = -1
        seen_at: datetime | None = None
        wall = self._clock.now()
        for i in order:
            key = (received[i], occurred_us[i], ids[i])
            if self._skip_through is not None:
                if key <= self._skip_through:
                    continue
                self._skip_through = None
            if received[i] != last_received:
                last_received = received[i]
                self._current_received_us = last_received
                self._current_ids.clear()
                if replay:
                    seen_at = min(us_to_datetime(last_received), wall)
                    if skipped_max is not None:
                        evaluator.advance_clock(us_to_datetime(skipped_max), seen_at)
                        skipped_max = None
            event_id = ids[i]
            if evaluator.wants(names[i], event_id, cols.follows[i]):
                out += evaluator.on_event(self._event(cols, i, received[i]), seen_at)
            elif skipped_max is None or occurred_us[i] > skipped_max:
                skipped_max = occurred_us[i]
            self._current_ids.add(event_id)
            self._watermark = key
        if skipped_max is not None:
            evaluator.advance_clock(us_to_datetime(skipped_max), seen_at)
        return out

    @staticmethod
    def _event(cols: EventColumns, i: int, received_us: int) -> ReceivedEvent:
        # The writer stored it, so it is valid: build the model without re-validating.
        follows = cols.follows[i]
        return ReceivedEvent.model_construct(
            occurred=us_to_datetime(cols.occurred_us[i]),
            event=cols.names[i],
            resource=orjson.loads(cols.resources[i]),
            related=orjson.loads(cols.related[i]),
            payload=orjson.loads(cols.payloads[i]),
            id=UUID(cols.ids[i]),
            follows=UUID(follows) if follows else None,
            received=us_to_datetime(received_us),
        )

    def _leader_processed(self, leader: UUID) -> bool:
        """A follower's leader was already passed through the evaluator (evaluated or
        skipped) if it was committed before the follower (received earlier, or earlier in the
        same request). Rare: only for followers whose leader is not in the seen-ids."""
        if str(leader) in self._current_ids:
            return True
        return self.db.event_received_before(
            str(leader), self._current_received_us, LEADER_WINDOW_US
        )

    async def _persist_and_dispatch(self, step: _Step) -> list[Firing]:
        if not step.firings and step.state is None:
            return []
        # The lanes decide each firing's runs before it is stored (admitted, or skipped by
        # the rate limit or a full queue, or cancelled by a pause under way), so runs that
        # will not run are stored finished in the same transaction.
        now = self._clock.now()
        stamp = now.timestamp()
        items: list[NewFiring] = []
        admissions: list[Admission] = []
        for firing, automation in step.firings:
            runs = runs_for(firing, automation)
            admission = self._lanes.admit(
                automation.id, len(runs), effective_limit(automation, self.config), stamp
            )
            if admission.status is not None:
                for run in runs:
                    run.status, run.reason, run.finished = admission.status, admission.reason, now
            items.append(NewFiring(firing, state_event_id(firing), runs))
            admissions.append(admission)
        try:
            new = await self._record(items, step)
        except BaseException:
            for admission in admissions:
                self._lanes.release(admission)
            raise
        fired: list[Firing] = []
        started: list[tuple[_Work, NewFiring, Admission]] = []
        for (firing, automation), item, admission in zip(
            step.firings, items, admissions, strict=True
        ):
            if firing.id not in new:  # re-derived after a restart: already acted on
                self._lanes.release(admission)
                continue
            fired.append(firing)
            cause = firing_cause(firing)
            work = _Work(automation, firing, cause, state_event(automation, firing, cause), now)
            started.append((work, item, admission))
        # Announcements are queued for the writer before any run's events.
        self._announce_firings([work for work, _, _ in started])
        cancelled: list[ActionRun] = []
        for work, item, admission in started:
            if admission.status is None and not self._lanes.enqueue(
                admission, [_Queued(work, run) for run in item.runs]
            ):
                cancelled += self._cancelled(item.runs, work.automation.id)
        if cancelled:
            self._journal.record(cancelled)
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
        """Queue the firings' herald.automation.triggered|resolved events for the writer in
        one submission; mark them announced (in one batch) once committed."""
        fresh = [w for w in works if not w.announced]
        if not fresh:
            return
        cols, errors = json_events_to_columns(
            [w.announcement for w in fresh], now_us(), self._limits
        )
        for index, message in errors:
            log.warning(
                "automation %r: the event announcing firing %s is not valid, not stored: %s",
                fresh[index].automation.name,
                fresh[index].firing.id,
                message,
            )
        ids = [w.firing.id for w in fresh]
        committed = self._spawn(self._commit(cols)) if len(cols) else None
        self._spawn(self._mark_announced(committed, ids))

    async def _mark_announced(self, committed: asyncio.Task[None] | None, ids: list[UUID]) -> None:
        if committed is not None:
            await committed
        await self._journal.record(announced=ids)

    async def _record(self, items: list[NewFiring], step: _Step) -> set[UUID]:
        """Store firings + state, retrying store errors: an evaluated firing must not be lost
        (while stopping, a few tries only; what is lost then is re-derived by the replay)."""
        delay = 0.1
        tries = 0
        while True:
            tries += 1
            async with self._persist:
                # A snapshot older than one already stored is not written over it.
                state = step.state if step.seq > self._stored_seq else None
                try:
                    new = await self._store(self.db.record, items, state, self._clock.now())
                except StoreError as exc:
                    if self._stopping and tries >= 3:
                        raise
                    log.warning("storing automation firings failed (retrying): %s", exc)
                else:
                    if state is not None:
                        self._stored_seq = step.seq
                    return new
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- restart ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        state = await self._store(self.db.load_state)
        await self._reload(checkpoint=False)
        if state is not None:
            try:
                self._evaluator.restore(state.snapshot)
                self._last_core, self._last_seen = state.core, state.seen or b""
            except HeraldError as exc:
                log.warning("ignoring the stored automations state: %s", exc)
            self._watermark = self._last_watermark = state.watermark
        oldest = now_us() - MAX_REPLAY_US
        if self._watermark is None or self._watermark[0] < oldest:
            if self._watermark is not None:
                log.warning(
                    "automations: the evaluation watermark is older than an hour; events "
                    "received before %s are not replayed",
                    us_to_datetime(oldest),
                )
            # With no watermark, evaluation starts now: the listener already queues commits.
            self._watermark = (now_us() if self._watermark is None else oldest, -1, _ZERO_ID)
        await self._resume_unfinished()
        await self._replay()

    async def _replay(self, *, catch_up: bool = False) -> None:
        """Evaluate every stored event after the watermark, slice by slice, to the end of what
        is committed. The listener keeps queueing meanwhile; queued events the replay already
        evaluated are skipped by key."""
        replayed = 0
        while not self._stopping:
            after = self._watermark
            assert after is not None
            if catch_up and self._lagging:
                # Queue commits again from here on; what is in the store up to now is read
                # below, and the overlap with the queue is skipped by key.
                cols, received = await self._store(
                    self.db.events_received_since, after, REPLAY_CHUNK
                )
                if len(cols) < REPLAY_CHUNK:
                    self._lagging = False
                    cols, received = await self._store(
                        self.db.events_received_since, after, REPLAY_CHUNK
                    )
            else:
                cols, received = await self._store(
                    self.db.events_received_since, after, REPLAY_CHUNK
                )
            if not len(cols):
                break
            replayed += len(cols)
            self._skip_through = None
            result = self._finish_step(self._feed(cols, received, replay=True), False)
            self._skip_through = self._watermark
            self._next_due = result.next_due
            await self._persist_and_dispatch(result)
            if len(cols) < REPLAY_CHUNK:
                break
            await asyncio.sleep(0)
        self._lagging = False
        if replayed:
            log.info("automations: evaluated %d stored events after the watermark", replayed)

    async def _resume_unfinished(self) -> None:
        """Announce firings and queue the action runs a stopped process left unfinished
        (``triggered``); runs of an automation paused or deleted since are cancelled.
        Cancelled and skipped runs are finished: they are never resumed."""
        automations: dict[UUID, StoredAutomation | None] = {}
        cancelled: list[ActionRun] = []
        announced: list[UUID] = []
        resumed = 0
        now = self._clock.now()
        for item in await self._store(self.db.unfinished):
            automation_id = item.firing.automation_id
            if automation_id not in automations:
                automations[automation_id] = await self._store(
                    self.db.get_automation, automation_id
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

    # -- firing → actions -------------------------------------------------------------------

    def _submit(self, events: list[dict[str, Any]]) -> asyncio.Task[None]:
        """Queue events for the writer now (keeping their order), commit in the background."""
        cols, errors = json_events_to_columns(events, now_us(), self._limits)
        if errors:
            raise InvalidEvent(errors[0][1])
        return self._spawn(self._commit(cols))

    async def _commit(self, cols: EventColumns) -> None:
        waited = 0.0
        while True:
            try:
                await asyncio.wrap_future(self._writer.submit_nowait(cols))
                return
            except Busy as exc:
                if waited >= EMIT_RETRY_SECONDS:
                    raise
                pause = max(0.05, min(exc.retry_after, 1.0))
                await asyncio.sleep(pause)
                waited += pause

    async def _store_events(self, events: list[dict[str, Any]], resumed: bool = False) -> None:
        """Store events through the ingest path and wait until they are committed. For a
        resumed action, events already stored (before the restart) are not sent again."""
        if resumed:
            since = self._clock.now() - RESUME_LOOKBACK
            kept = []
            for event in events:
                name = await self._store(self.db.stored_event_name, UUID(event["id"]), since)
                if name is None:
                    kept.append(event)
            events = kept
        if events:
            await self._submit(events)

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
            name = await self._store(self.db.stored_event_name, finished_id, created)
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
        self._submit(
            [
                action_event(
                    "triggered",
                    automation,
                    firing,
                    cause,
                    event_id=triggered_id,
                    occurred=created,
                    payload=base,
                    state_event_id=announced.id,  # type: ignore[arg-type]
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
        self._submit(
            [
                action_event(
                    outcome.status,
                    automation,
                    firing,
                    cause,
                    event_id=finished_id,
                    occurred=run.finished,
                    payload=payload,
                    state_event_id=announced.id,  # type: ignore[arg-type]
                    targets=outcome.targets,
                    follows=triggered_id,
                )
            ]
        )

    # -- automations: CRUD ------------------------------------------------------------------

    async def _reload(self, *, checkpoint: bool = True) -> None:
        stored = await self._api(self.db.list_automations)
        automations = [s.automation for s in stored]
        self._lanes.prune({a.id for a in automations})
        if not self._started:
            return
        self._evaluator.load(automations)
        self._automations = {a.id: a for a in automations if a.enabled}
        if checkpoint:
            # Saved with the next step, so the state in the store matches the new set.
            self._force_checkpoint = True
            self._wakeup.set()

    async def _announce(self, kind: str, stored: StoredAutomation, cause: Cause = NO_CAUSE) -> None:
        event = crud_event(kind, stored.automation, stored.to_dict(), self._clock.now(), cause)
        committed = self._submit([event])
        # Normally committed before the call answers; behind a long writer queue (a runaway
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
        previous = self._lanes.closed_reason(automation_id)
        if reason is not None:
            self._lanes.close(automation_id, reason)
        try:
            stored = await self._api(write)
        except BaseException:
            self._lanes.restore(automation_id, previous)
            raise
        if reason is None:
            self._lanes.open(automation_id)
            return stored
        waiting = self._lanes.cancel(automation_id)
        # Firings evaluated before the close and being stored now (at most a few pipelined
        # steps) find the lane cancelled and record their runs so: let them, briefly, so
        # that no run of the automation is left waiting when the call answers.
        storing = [task for task in self._persisting if not task.done()]
        if storing:
            await asyncio.wait(storing, timeout=PIPELINE_WAIT_SECONDS)
        runs = self._cancelled([q.run for q in waiting], automation_id)
        await self._journal.record(runs)
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
            stored = await self._api(self.db.insert_automation, automation, self._clock.now())
            await self._reload()
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
                partial(self.db.replace_automation, automation, self._clock.now()),
            )
            await self._reload()
        await self._announce("updated", stored)
        return stored

    async def set_enabled(
        self, automation_id: UUID, enabled: bool, cause: Cause = NO_CAUSE
    ) -> StoredAutomation:
        """Pause (False) or resume (True) an automation (PATCH ``{"enabled": …}``). A pause
        takes effect at once: nothing more of it starts, and its waiting runs are cancelled
        (runs in flight finish their current attempt and make no further one)."""
        async with self._crud:
            current = await self.read(automation_id)
            # Re-validated, as Prefect does: a PATCH cannot enable an invalid automation.
            automation = validate_automation(
                {**current.automation.model_dump(mode="json"), "enabled": enabled}
            )
            stored = await self._write_stopping(
                automation_id,
                None if enabled else PAUSED,
                partial(self.db.replace_automation, automation, self._clock.now()),
            )
            await self._reload()
        await self._announce("updated", stored, cause)
        return stored

    async def _set_enabled_by_action(self, automation_id: UUID, enabled: bool, cause: Cause) -> Any:
        return await self.set_enabled(automation_id, enabled, cause)

    async def delete(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation; its firings and action runs stay as history, its waiting
        runs are cancelled."""
        async with self._crud:
            stored = await self._write_stopping(
                automation_id, DELETED, partial(self.db.delete_automation, automation_id)
            )
            await self._reload()
        await self._announce("deleted", stored)
        return stored

    async def read(self, automation_id: UUID) -> StoredAutomation:
        stored = await self._api(self.db.get_automation, automation_id)
        if stored is None:
            raise NotFound(f"Automation with id '{automation_id}' not found.")
        return stored

    async def find(self, name: str) -> list[StoredAutomation]:
        found = await self._api(self.db.find_by_name, name)
        if not found:
            raise NotFound(f"Automation '{name}' not found.")
        return found

    async def list(self) -> list[StoredAutomation]:
        return await self._api(self.db.list_automations)

    async def history(
        self, automation_id: UUID | None, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._api(self.db.history, automation_id, limit, status)

    async def run_counts(self, automation_id: UUID | None) -> dict[str, int]:
        """How many action runs (of one automation, or all) are in each status."""
        return await self._api(self.db.run_counts, automation_id)
