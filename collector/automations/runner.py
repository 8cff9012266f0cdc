"""``AutomationRunner``: automations at run time inside ``herald serve`` (SPEC §7).

It owns the evaluation loop and everything around the pure ``Evaluator``:

* **Input.** The writer calls ``_on_commit`` after every commit; the columns go to an in-memory
  queue (bounded: past ``MAX_BACKLOG_EVENTS`` the runner stops queueing and later catches up
  from the store). Only committed events are evaluated.
* **Evaluation** happens on one dedicated thread (the evaluator is not thread-safe, and keeping
  it off the event loop keeps ingest responsive). Events no trigger can care about are skipped
  by name (they only move the events clock). ``tick`` runs every
  ``automations.evaluation_interval_seconds`` and when ``next_due()`` says a window ends.
* **Persistence.** New firings, their action runs, the evaluator snapshot and the watermark are
  written in one transaction; firing ids are deterministic, so a firing derived twice is stored
  (and acted on) once. Without firings the snapshot is checkpointed every interval when it
  changed, and on shutdown.
* **Restart.** The snapshot is restored, then every event received since the watermark (minus
  ``REPLAY_MARGIN``, for commits that landed slightly out of ``received`` order; the
  evaluator's seen-ids drop the overlap) is replayed from the store, and firings whose
  announcement or actions did not finish are resumed. So a restart neither misses nor repeats a
  firing; an action interrupted mid-way runs again (at-least-once).
* **Firing → actions** (P§6.4): ``herald.automation.triggered|resolved`` is stored, then each
  action runs as its own task with ``herald.automation.action.triggered`` and
  ``.executed|.failed`` events and an ``action_runs`` row. ``actions`` run on both triggered
  and resolved firings (Prefect's rule); ``actions_on_trigger``/``actions_on_resolve`` on one.
* **CRUD**: create/update/delete/pause/resume validate, store, emit
  ``herald.automation.created|updated|deleted`` and reload the evaluator (unchanged triggers
  keep their state: divergence 1). These work even when evaluation is turned off.

The loop guard is in ``collector.automations.events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx
import orjson

from collector.automations.actions import ActionCall, ActionExecutor, Outcome
from collector.automations.evaluator import Evaluator, Firing
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
from collector.automations.templates import TemplateEngine, validate_automation_templates
from collector.clock import Clock, SystemClock, now_us
from collector.config import AutomationsConfig
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
from collector.store.automations_store import (
    ActionRun,
    AutomationStore,
    EvaluatorState,
    NewFiring,
    StoredAutomation,
)
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

# Replay starts this long before the watermark: `received` is stamped just before an event is
# queued for commit, so commit order and `received` order can differ by a hair.
REPLAY_MARGIN_US = 2_000_000
# A watermark older than this is not replayed from (only possible when evaluation was turned
# off in the config for a long time; the server cannot have taken events while it was down).
MAX_REPLAY_US = 3_600_000_000
REPLAY_CHUNK = 5_000
MAX_BACKLOG_EVENTS = 200_000
MAX_CONCURRENT_ACTIONS = 64
EMIT_RETRY_SECONDS = 30.0
# How far back a follower's leader is looked up in the store (Prefect keeps seen ids 30 min).
LEADER_WINDOW_US = 30 * 60 * 1_000_000
# Resumed work looks this far back for what it already stored (the default retention).
RESUME_LOOKBACK = timedelta(days=7)
NO_CAUSE = Cause()  # what a user's own request carries (immutable, so a shared default)


@dataclass(slots=True)
class _Step:
    """What one evaluation step on the evaluator thread produced."""

    firings: list[tuple[Firing, Automation]]
    state: EvaluatorState | None
    seq: int
    next_due: datetime | None


def _received_event(event: dict[str, Any], received: datetime) -> ReceivedEvent:
    return ReceivedEvent.model_validate({**event, "received": received})


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
        self._templates = TemplateEngine()
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
        # Evaluator state is touched on this one thread only.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="herald-evaluator")
        self._automations: dict[UUID, Automation] = {}  # enabled ones, as loaded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[tuple[EventColumns, list[int]]] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._lag_floor_us: int | None = None  # set while the backlog overflowed
        self._watermark_us: int | None = None
        self._watermark_id: str | None = None
        self._current_received_us = 0
        self._current_ids: set[str] = set()
        self._seq = 0
        self._stored_seq = 0
        self._last_snapshot: bytes = b""
        self._force_checkpoint = False
        self._next_due: datetime | None = None
        self._crud = asyncio.Lock()
        self._persist = asyncio.Lock()
        self._actions = asyncio.Semaphore(MAX_CONCURRENT_ACTIONS)
        self._tasks: set[asyncio.Task[Any]] = set()
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
        """Wait until every running dispatch (announcements, actions) has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

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
        if self._started and self._recovered.is_set():
            try:
                await self._checkpoint()
            except HeraldError as exc:
                log.warning("could not save the automations state: %s", exc)
        if self._own_http:
            await self._http.aclose()
        self._thread.shutdown(wait=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("automation task failed", exc_info=task.exception())

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    # -- input ------------------------------------------------------------------------------

    def _on_commit(self, cols: EventColumns, received_us: list[int]) -> None:
        """Writer-thread callback: hand the committed columns to the loop."""
        loop = self._loop
        if loop is not None and not self._stopping:
            loop.call_soon_threadsafe(self._enqueue, cols, received_us)

    def _enqueue(self, cols: EventColumns, received_us: list[int]) -> None:
        if self._lag_floor_us is not None or self._stopping:
            return  # catching up from the store anyway
        if self._queued_events + len(cols) > self._max_backlog:
            # Memory stays bounded: drop the backlog's tail and re-read it from the store.
            self._lag_floor_us = min(received_us) if received_us else now_us()
            log.warning("automations fell behind by %d events; catching up from the store",
                        self._queued_events)
        else:
            self._queue.append((cols, received_us))
            self._queued_events += len(cols)
        self._wakeup.set()

    def _take(self) -> list[tuple[EventColumns, list[int]]]:
        batches = list(self._queue)
        self._queue.clear()
        self._queued_events = 0
        return batches

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._recover()
        finally:
            self._recovered.set()
        interval = self.config.evaluation_interval_seconds
        next_tick = loop.time()
        last_checkpoint = loop.time()
        while not self._stopping:
            delay = next_tick - loop.time()
            if self._next_due is not None:
                delay = min(delay, (self._next_due - self._clock.now()).total_seconds())
            if not self._queue and self._lag_floor_us is None:
                # At least a few ms: a due time that a tick cannot clear must not spin.
                delay = max(delay, 0.005)
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except TimeoutError:
                    pass
                if self._stopping:
                    break
            now = loop.time()
            due = self._next_due is not None and self._next_due <= self._clock.now()
            tick = now >= next_tick or due
            if tick:
                next_tick = now + interval
            checkpoint = self._force_checkpoint or now - last_checkpoint >= interval
            try:
                await self.step(tick=tick, checkpoint=checkpoint)
                if checkpoint:
                    last_checkpoint = now
            except Exception:
                log.exception("automation evaluation step failed")
                await asyncio.sleep(min(interval, 1.0))
        # Whatever was committed before the stop is evaluated now rather than replayed later.
        if self._queue:
            try:
                await self.step(tick=False, checkpoint=False)
            except Exception:
                log.exception("automation evaluation step failed")

    async def step(self, *, tick: bool, checkpoint: bool = False) -> list[Firing]:
        """One round: evaluate what is queued (and ``tick`` if asked), persist, dispatch.
        Returns the firings that were new. Tests call it directly with a FakeClock."""
        batches = self._take()
        force = self._force_checkpoint
        self._force_checkpoint = False
        started = time.perf_counter()
        result = await self._on_thread(self._evaluate, batches, tick, checkpoint or force)
        evaluated = time.perf_counter()
        fired = await self._persist_and_dispatch(result)
        if result.firings or result.state is not None:
            log.debug(
                "automations step: %d events, %d firings, evaluate %.1f ms, store %.1f ms%s",
                sum(len(c) for c, _ in batches), len(result.firings),
                (evaluated - started) * 1000, (time.perf_counter() - evaluated) * 1000,
                " (with state)" if result.state is not None else "",
            )
        if self._lag_floor_us is not None:
            await self._catch_up()
        return fired

    def _evaluate(
        self,
        batches: list[tuple[EventColumns, list[int]]],
        tick: bool,
        checkpoint: bool,
        replay: bool = False,
    ) -> _Step:
        """Evaluator thread: feed the batches, tick, snapshot when needed."""
        firings: list[Firing] = []
        for cols, received in batches:
            firings += self._feed(cols, received, replay)
        if tick:
            firings += self._evaluator.tick(self._clock.now())
        return self._finish_step(firings, checkpoint)

    def _finish_step(self, firings: list[Firing], checkpoint: bool) -> _Step:
        state = None
        if firings or checkpoint:
            snapshot = self._evaluator.state_snapshot()
            encoded = orjson.dumps(snapshot)
            if firings or encoded != self._last_snapshot:
                self._last_snapshot = encoded
                state = EvaluatorState(snapshot, self._watermark_us, self._watermark_id, encoded)
        self._seq += 1
        paired = [
            (f, self._automations[f.automation_id])
            for f in firings
            if f.automation_id in self._automations
        ]
        return _Step(paired, state, self._seq, self._evaluator.next_due())

    def _feed(self, cols: EventColumns, received: list[int], replay: bool) -> list[Firing]:
        """Evaluator thread: evaluate committed events in (received, occurred, id) order — the
        order a replay reads them in, so a replay re-derives the same firings. Replayed events
        count as seen when they were received (no tick runs during a replay, and once it is
        done the runner is caught up), so a restart does not push proactive windows back by
        the downtime."""
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
            if evaluator.wants(names[i], event_id):
                out += evaluator.on_event(self._event(cols, i, received[i]), seen_at)
            elif skipped_max is None or occurred_us[i] > skipped_max:
                skipped_max = occurred_us[i]
            self._current_ids.add(event_id)
            if self._watermark_us is None or received[i] >= self._watermark_us:
                self._watermark_us = received[i]
                self._watermark_id = event_id
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
        """Evaluator thread: a follower's leader was already passed through the evaluator
        (evaluated or skipped) if it was committed before the follower (received earlier, or
        earlier in the same request)."""
        if str(leader) in self._current_ids:
            return True
        return self.db.event_received_before(
            str(leader), self._current_received_us, LEADER_WINDOW_US
        )

    async def _persist_and_dispatch(self, step: _Step) -> list[Firing]:
        self._next_due = step.next_due
        if not step.firings and step.state is None:
            return []
        items = [
            NewFiring(f, state_event_id(f), runs_for(f, a)) for f, a in step.firings
        ]
        new = await self._record(items, step)
        fired: list[Firing] = []
        for (firing, automation), item in zip(step.firings, items, strict=True):
            if firing.id in new:
                fired.append(firing)
                self._spawn(self._dispatch(automation, firing, item.runs, announced=False))
        return fired

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
                    new = await asyncio.to_thread(self.db.record, items, state, self._clock.now())
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

    async def _checkpoint(self) -> None:
        """Save the evaluator state now (if it changed since the last write)."""
        await self._persist_and_dispatch(await self._on_thread(self._finish_step, [], True))

    # -- restart ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        state = await asyncio.to_thread(self.db.load_state)
        await self._reload(checkpoint=False)
        floor = now_us() - REPLAY_MARGIN_US
        if state is not None:
            try:
                await self._on_thread(self._evaluator.restore, state.snapshot)
                self._last_snapshot = orjson.dumps(state.snapshot)
            except HeraldError as exc:
                log.warning("ignoring the stored automations state: %s", exc)
            if state.watermark_us is not None:
                self._watermark_us = state.watermark_us
                self._watermark_id = state.watermark_id
                floor = state.watermark_us - REPLAY_MARGIN_US
        oldest = now_us() - MAX_REPLAY_US
        if floor < oldest:
            log.warning(
                "automations: the evaluation watermark is older than an hour; events received "
                "before %s are not replayed", us_to_datetime(oldest)
            )
            floor = oldest
        await self._resume_unfinished()
        await self._replay(floor)

    async def _replay(self, floor_us: int) -> None:
        """Evaluate every event received since ``floor_us``, chunk by chunk, to the end of
        what is committed. Events the listener queues meanwhile overlap the last chunks; the
        evaluator ignores an event id it has seen."""
        after: tuple[int, int, str] | None = None
        replayed = 0
        while not self._stopping:
            cols, received = await asyncio.to_thread(
                self.db.events_received_since, floor_us, after, REPLAY_CHUNK
            )
            if len(cols) < REPLAY_CHUNK and self._lag_floor_us is not None:
                # Catching up after an overflow: queue commits again from here on, then read
                # once more so nothing committed in between is missed.
                self._lag_floor_us = None
                cols, received = await asyncio.to_thread(
                    self.db.events_received_since, floor_us, after, REPLAY_CHUNK
                )
            if not len(cols):
                break
            replayed += len(cols)
            last = len(cols) - 1
            after = (received[last], cols.occurred_us[last], cols.ids[last])
            result = await self._on_thread(
                self._evaluate, [(cols, received)], False, False, True
            )
            await self._persist_and_dispatch(result)
            if len(cols) < REPLAY_CHUNK:
                break
        if replayed:
            log.info("automations: replayed %d events received since the last state", replayed)

    async def _catch_up(self) -> None:
        floor = self._lag_floor_us
        if floor is None:
            return
        await self._replay(min(floor, self._watermark_us or floor) - REPLAY_MARGIN_US)
        self._lag_floor_us = None

    async def _resume_unfinished(self) -> None:
        """Announce firings and run actions that a stopped process left unfinished."""
        for item in await asyncio.to_thread(self.db.unfinished):
            stored = await asyncio.to_thread(self.db.get_automation, item.firing.automation_id)
            if stored is None:
                now = self._clock.now()
                for run in item.runs:
                    run.status, run.reason = "failed", "the automation was deleted"
                    run.started = run.started or now
                    run.finished = now
                    await asyncio.to_thread(self.db.finish_run, run)
                await asyncio.to_thread(self.db.mark_announced, item.firing.id)
                continue
            log.info(
                "automations: resuming firing %s of %s", item.firing.id, stored.automation.name
            )
            self._spawn(
                self._dispatch(
                    stored.automation, item.firing, item.runs, announced=item.announced,
                    resumed=True,
                )
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
                name = await asyncio.to_thread(
                    self.db.stored_event_name, UUID(event["id"]), since
                )
                if name is None:
                    kept.append(event)
            events = kept
        if events:
            await self._submit(events)

    async def _dispatch(
        self,
        automation: Automation,
        firing: Firing,
        runs: list[ActionRun],
        *,
        announced: bool,
        resumed: bool = False,
    ) -> None:
        cause = firing_cause(firing)
        announcement = state_event(automation, firing, cause)
        committed = None if announced else self._submit([announcement])
        announced_event = _received_event(announcement, self._clock.now())
        if runs:
            await asyncio.gather(
                *(self._run_action(automation, firing, run, announced_event, cause,
                                   resumed=resumed)
                  for run in runs)
            )
        if committed is not None:
            await committed
            await asyncio.to_thread(self.db.mark_announced, firing.id)

    async def _run_action(
        self,
        automation: Automation,
        firing: Firing,
        run: ActionRun,
        announced: ReceivedEvent,
        cause: Cause,
        *,
        resumed: bool = False,
    ) -> None:
        async with self._actions:
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
                name = await asyncio.to_thread(self.db.stored_event_name, finished_id, created)
                if name is not None:
                    run.status = name.rsplit(".", 1)[-1]
                    run.reason = run.reason or "recorded before a restart"
                    run.finished = now
                    await asyncio.to_thread(self.db.finish_run, run)
                    return
            base = {
                "action_index": run.action_index,
                "action_type": run.action_type,
                "action_list": run.action_list,
                "phase": run.phase,
                "invocation": str(run.id),
                "firing_id": str(firing.id),
            }
            self._submit([
                action_event(
                    "triggered", automation, firing, cause, event_id=triggered_id,
                    occurred=created, payload=base,
                    state_event_id=announced.id,  # type: ignore[arg-type]
                    follows=follows_if_close(firing.triggering_event, created),
                )
            ])
            if action is None or action.type != run.action_type:
                outcome = Outcome("failed", "the automation changed before the action could run")
            else:
                # actions_on_trigger/resolve see the herald.automation.* event as `event`
                # (Prefect's rule); `actions` see what triggered the firing.
                event = None if run.action_list == "actions" else announced
                outcome = await self._executor.run(
                    ActionCall(
                        automation=automation, firing=firing, action=action,
                        where=f"{run.action_list}[{run.action_index}]", run_id=run.id,
                        event=event, cause=cause, resumed=resumed,
                    )
                )
            run.status = outcome.status
            run.reason = outcome.reason
            run.detail = outcome.detail
            run.response_status = outcome.response_status
            run.finished = self._clock.now()
            if outcome.status == "failed":
                log.warning("automation %r: %s %s failed: %s", automation.name,
                            run.action_list, run.action_type, outcome.reason)
            await asyncio.to_thread(self.db.finish_run, run)
            payload = {**base, **outcome.detail}
            if outcome.reason:
                payload["reason"] = outcome.reason
            self._submit([
                action_event(
                    outcome.status, automation, firing, cause,
                    event_id=finished_id,
                    occurred=run.finished, payload=payload,
                    state_event_id=announced.id,  # type: ignore[arg-type]
                    targets=outcome.targets, follows=triggered_id,
                )
            ])

    # -- automations: CRUD ------------------------------------------------------------------

    async def _reload(self, *, checkpoint: bool = True) -> None:
        stored = await asyncio.to_thread(self.db.list_automations)
        automations = [s.automation for s in stored]
        if not self._started:
            return

        def load() -> None:
            self._evaluator.load(automations)
            self._automations = {a.id: a for a in automations if a.enabled}

        await self._on_thread(load)
        if checkpoint:
            self._force_checkpoint = True
            self._wakeup.set()

    async def _announce(
        self, kind: str, stored: StoredAutomation, cause: Cause = NO_CAUSE
    ) -> None:
        event = crud_event(kind, stored.automation, stored.to_dict(), self._clock.now(), cause)
        await self._store_events([event])

    async def create(self, data: Any) -> StoredAutomation:
        """Validate and store a new automation (an ``id`` in ``data`` is kept if free)."""
        automation = validate_automation(data)
        async with self._crud:
            stored = await asyncio.to_thread(
                self.db.insert_automation, automation, self._clock.now()
            )
            await self._reload()
        await self._announce("created", stored)
        return stored

    async def update(self, automation_id: UUID, data: Any) -> StoredAutomation:
        """Replace an automation as a whole (PUT). Triggers that did not change keep their
        bucket state (divergence 1)."""
        if isinstance(data, dict):
            given = data.get("id")
            if given is not None and str(given) != str(automation_id):
                raise InvalidAutomation(f"id: {given} does not match the automation's id "
                                        f"{automation_id}")
            data = {**data, "id": str(automation_id)}
        automation = validate_automation(data)
        async with self._crud:
            stored = await asyncio.to_thread(
                self.db.replace_automation, automation, self._clock.now()
            )
            await self._reload()
        await self._announce("updated", stored)
        return stored

    async def set_enabled(
        self, automation_id: UUID, enabled: bool, cause: Cause = NO_CAUSE
    ) -> StoredAutomation:
        """Pause (False) or resume (True) an automation (PATCH ``{"enabled": …}``)."""
        async with self._crud:
            current = await self.read(automation_id)
            # Re-validated, as Prefect does: a PATCH cannot enable an invalid automation.
            automation = validate_automation(
                {**current.automation.model_dump(mode="json"), "enabled": enabled}
            )
            stored = await asyncio.to_thread(
                self.db.replace_automation, automation, self._clock.now()
            )
            await self._reload()
        await self._announce("updated", stored, cause)
        return stored

    async def _set_enabled_by_action(self, automation_id: UUID, enabled: bool, cause: Cause) -> Any:
        return await self.set_enabled(automation_id, enabled, cause)

    async def delete(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation; its firings and action runs stay as history."""
        async with self._crud:
            stored = await asyncio.to_thread(self.db.delete_automation, automation_id)
            await self._reload()
        await self._announce("deleted", stored)
        return stored

    async def read(self, automation_id: UUID) -> StoredAutomation:
        stored = await asyncio.to_thread(self.db.get_automation, automation_id)
        if stored is None:
            raise NotFound(f"Automation with id '{automation_id}' not found.")
        return stored

    async def find(self, name: str) -> list[StoredAutomation]:
        found = await asyncio.to_thread(self.db.find_by_name, name)
        if not found:
            raise NotFound(f"Automation '{name}' not found.")
        return found

    async def list(self) -> list[StoredAutomation]:
        return await asyncio.to_thread(self.db.list_automations)

    async def history(self, automation_id: UUID | None, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.db.history, automation_id, limit)

