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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
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
    EventKey,
    NewFiring,
    StoredAutomation,
)
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


@dataclass(slots=True)
class _Step:
    """What one evaluation step produced."""

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
        self._actions = asyncio.Semaphore(MAX_CONCURRENT_ACTIONS)
        self._tasks: set[asyncio.Task[Any]] = set()
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
                await self._flush()
                await self._persist_and_dispatch(
                    self._finish_step([], checkpoint=True, save_seen=True)
                )
            except HeraldError as exc:
                log.warning("could not save the automations state: %s", exc)
        self._templates.close()
        if self._own_http:
            await self._http.aclose()

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
        items = [NewFiring(f, state_event_id(f), runs_for(f, a)) for f, a in step.firings]
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

    # -- restart ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        state = await asyncio.to_thread(self.db.load_state)
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
                cols, received = await asyncio.to_thread(
                    self.db.events_received_since, after, REPLAY_CHUNK
                )
                if len(cols) < REPLAY_CHUNK:
                    self._lagging = False
                    cols, received = await asyncio.to_thread(
                        self.db.events_received_since, after, REPLAY_CHUNK
                    )
            else:
                cols, received = await asyncio.to_thread(
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
                    stored.automation,
                    item.firing,
                    item.runs,
                    announced=item.announced,
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
                name = await asyncio.to_thread(self.db.stored_event_name, UUID(event["id"]), since)
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
                *(
                    self._run_action(
                        automation, firing, run, announced_event, cause, resumed=resumed
                    )
                    for run in runs
                )
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
            await asyncio.to_thread(self.db.finish_run, run)
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
        stored = await asyncio.to_thread(self.db.list_automations)
        automations = [s.automation for s in stored]
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
                raise InvalidAutomation(
                    f"id: {given} does not match the automation's id {automation_id}"
                )
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
