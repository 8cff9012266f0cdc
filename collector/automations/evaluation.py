"""``EvaluationLoop``: automations evaluated against committed events, with a watermark and a
replay, around the pure ``Evaluator`` (SPEC §7).

* **Input.** The event sink calls ``on_commit`` after every commit; the columns go to an
  in-memory queue (bounded: past ``max_backlog_events`` the loop stops queueing and later
  catches up from the store). Only committed events are evaluated.
* **Evaluation** runs on the event loop, in slices of at most ``STEP_EVENTS`` events (measured:
  a separate evaluator thread lost more to GIL hand-offs than it saved). Events no trigger can
  care about are skipped by name (they only move the events clock). ``tick`` runs every
  ``automations.evaluation_interval_seconds`` and when ``next_due()`` says a window ends.
* **Persistence.** New firings, their action runs, the evaluator state and the watermark are
  written in one transaction before any action runs (the ``FiringDispatcher`` decides the runs
  and acts on the firings that were new); firing ids are deterministic, so a firing derived
  twice is stored (and acted on) once. In the server's loop that write overlaps with
  evaluating the next slice (in order, at most ``MAX_PENDING_STORES`` behind). The
  evaluator's seen-ids (for re-sent duplicates) are saved every ``SEEN_CHECKPOINT_SECONDS``
  and on shutdown only: they are large and not needed for correctness of the replay.
* **Watermark.** Events are evaluated in (received, occurred, id) order — commit order, since
  the sink stamps ``received`` in queue order — and the key of the last one is the watermark.
  After a restart the state is restored and exactly the events after the watermark are
  replayed from the store. So a restart neither misses nor repeats a firing.
* **Following the store** (``follow_store_seconds``; the leader of a cluster). Several
  collectors commit into one lake, so commit notices are not the whole story, and their
  ``received`` times are not in commit order across collectors. Then the loop evaluates only
  what the store returns after the watermark — every ``follow_store_seconds`` and at each
  local commit notice — and the store hands events in its commit order with ``received`` made
  to rise (``collector/store/lake/automation_events.py``): the same order live, after a
  restart and after a failover.

The loop guard is in ``collector.automations.events``; the restart sequence in
``collector.automations.runtime``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol
from uuid import UUID

import orjson

from collector.automations.background import WorkerThreads
from collector.automations.dispatch import FiringDispatcher
from collector.automations.evaluator import Evaluator
from collector.clock import Clock, now_us
from collector.config import AutomationsConfig
from collector.domain.automation_records import EvaluatorState, EventKey, Firing, NewFiring
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation
from collector.domain.columns import EventColumns
from collector.domain.events import us_to_datetime
from collector.errors import HeraldError, StoreError

log = logging.getLogger(__name__)

# A watermark older than this is not replayed from (only possible when evaluation was turned
# off in the config for a long time; the server cannot have taken events while it was down).
MAX_REPLAY_US = 3_600_000_000
REPLAY_CHUNK = 2_000
STEP_EVENTS = 2_000  # events evaluated per step: keeps each loop stall to a few ms
MAX_BACKLOG_EVENTS = 200_000
MAX_PENDING_STORES = 4  # pipelined steps whose firings/state are not stored yet
# The seen-ids are most of the state's size (~700 KB at 10k entries): saved this often only.
SEEN_CHECKPOINT_SECONDS = 10.0
# How far back a follower's leader is looked up in the store (Prefect keeps seen ids 30 min).
LEADER_WINDOW_US = 30 * 60 * 1_000_000
_ZERO_ID = "00000000-0000-0000-0000-000000000000"

Batch = tuple[EventColumns, list[int]]
CommitListener = Callable[[EventColumns, list[int]], None]


class CommitFeed(Protocol):
    """Where committed batches are announced (the store's writer)."""

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener(columns, received_us)`` after every commit (on any thread)."""
        ...


class LeaderLookup:
    """Answers the evaluator's question "was this follower's leader already processed?": yes
    if it was committed before the follower (received earlier, or earlier in the same
    request). The loop tells it where evaluation stands; rare (only for followers whose leader
    is not in the evaluator's seen-ids), so the store is asked directly."""

    def __init__(self, store: AutomationStateStore) -> None:
        self._store = store
        self.received_us = 0  # `received` of the events being evaluated now
        self.ids: set[str] = set()  # the ids evaluated so far with that `received`

    def at(self, received_us: int) -> None:
        self.received_us = received_us
        self.ids.clear()

    def processed(self, leader: UUID) -> bool:
        if str(leader) in self.ids:
            return True
        return self._store.event_received_before(str(leader), self.received_us, LEADER_WINDOW_US)


@dataclass(slots=True)
class _Step:
    """What one evaluation step produced."""

    firings: list[tuple[Firing, Automation]]
    state: EvaluatorState | None
    seq: int
    next_due: datetime | None


class EvaluationLoop:
    """Feeds committed events to the evaluator, stores what it derives, hands firings on."""

    def __init__(
        self,
        config: AutomationsConfig,
        evaluator: Evaluator,
        leaders: LeaderLookup,
        store: AutomationStateStore,
        threads: WorkerThreads,
        dispatcher: FiringDispatcher,
        clock: Clock,
        *,
        max_backlog_events: int = MAX_BACKLOG_EVENTS,
        follow_store_seconds: float | None = None,
    ) -> None:
        self._config = config
        self._follow = follow_store_seconds
        self._evaluator = evaluator
        self._leaders = leaders
        self._store = store
        self._threads = threads
        self._dispatcher = dispatcher
        self._clock = clock
        self._max_backlog = max_backlog_events
        self._automations: dict[UUID, Automation] = {}  # enabled ones, as loaded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[Batch] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._lagging = False  # the backlog overflowed: catch up from the store
        self._watermark: EventKey | None = None  # the last event evaluated (or skipped)
        self._skip_through: EventKey | None = None  # queued events a replay already covered
        self._seq = 0
        self._stored_seq = 0
        self._last_core: bytes = b""
        self._last_seen: bytes = b""
        self._last_watermark: EventKey | None = None
        self._force_checkpoint = False
        self._next_due: datetime | None = None
        self._persist = asyncio.Lock()
        self._persisting: deque[asyncio.Task[list[Firing]]] = deque()  # pipelined, in order
        self.recovered = asyncio.Event()  # the restart work (restore, replay, resume) is done
        self._stopping = False
        self._started = False

    @property
    def watermark(self) -> EventKey | None:
        """The key (received µs, occurred µs, id) of the last event evaluated."""
        return self._watermark

    # -- input ------------------------------------------------------------------------------

    def listen(self, commits: CommitFeed) -> None:
        """Start taking committed events (before the replay range is read, so no commit
        falls between the two)."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        commits.add_listener(self._on_commit)

    def _on_commit(self, cols: EventColumns, received_us: list[int]) -> None:
        """Sink-thread callback: hand the committed columns to the loop."""
        loop = self._loop
        if loop is not None and not self._stopping:
            if self._follow is not None:
                # Only a hint that the store moved: its events are read from the store.
                loop.call_soon_threadsafe(self._store_moved)
            else:
                loop.call_soon_threadsafe(self._enqueue, cols, received_us)

    def _store_moved(self) -> None:
        if not self._stopping:
            self._lagging = True
            self._wakeup.set()

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

    def load(self, automations: list[Automation], *, checkpoint: bool = True) -> None:
        """Evaluate this set of automations from now on (unchanged triggers keep their
        state). Ignored until the loop listens: CRUD works with evaluation turned off."""
        if not self._started:
            return
        self._evaluator.load(automations)
        self._automations = {a.id: a for a in automations if a.enabled}
        if checkpoint:
            # Saved with the next step, so the state in the store matches the new set.
            self._force_checkpoint = True
            self._wakeup.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate until ``stop``; then evaluate what was committed before it."""
        loop = asyncio.get_running_loop()
        interval = self._config.evaluation_interval_seconds
        next_tick = loop.time()
        last_checkpoint = last_seen = loop.time()
        while not self._stopping:
            delay = next_tick - loop.time()
            if self._next_due is not None:
                delay = min(delay, (self._next_due - self._clock.now()).total_seconds())
            if self._follow is not None:
                delay = min(delay, self._follow)
            if not self._queue and not self._lagging:
                # At least a few ms: a due time that a tick cannot clear must not spin.
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.005))
                except TimeoutError:
                    pass
                if self.stop_requested():  # set while we waited
                    break
            if self._follow is not None:
                self._lagging = True  # read what the store holds after the watermark
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

    def stop(self) -> None:
        """Ask the loop to end (``run`` returns after the step in progress)."""
        self._stopping = True
        self._wakeup.set()

    def stop_requested(self) -> bool:
        return self._stopping

    async def save(self) -> None:
        """After ``run`` ended: store the last state, seen-ids included."""
        if not (self._started and self.recovered.is_set()):
            return
        try:
            await self._flush()
            await self._persist_and_dispatch(self._finish_step([], True, save_seen=True))
        except HeraldError as exc:
            log.warning("could not save the automations state: %s", exc)

    async def step(
        self,
        *,
        tick: bool,
        checkpoint: bool = False,
        save_seen: bool = False,
        pipelined: bool = False,
    ) -> list[Firing]:
        """One round: evaluate a slice of what is queued (and ``tick`` if asked), persist,
        dispatch. Returns the firings that were new. Tests call it with a ManualClock.

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
                self._persisting.append(asyncio.create_task(self._persist_logged(result, started)))
            # Bounded: a stalled store slows evaluation down instead of piling up firings.
            while len(self._persisting) > MAX_PENDING_STORES or (
                self._persisting and self._persisting[0].done()
            ):
                await self._persisting.popleft()
        else:
            fired = await self._persist_logged(result, started)
        if self._lagging and not self._queue:
            await self.replay(catch_up=True)
        return fired

    async def _persist_logged(self, result: _Step, started: float) -> list[Firing]:
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

    async def settle(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the steps being stored now: a pause lets the firings
        evaluated before it find their automation's lane closed."""
        storing = [task for task in self._persisting if not task.done()]
        if storing:
            await asyncio.wait(storing, timeout=timeout)

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
        and once it is done the loop is caught up), so a restart does not push proactive
        windows back by the downtime. Queued events a replay already evaluated are skipped."""
        n = len(cols)
        if not n:
            return []
        evaluator = self._evaluator
        leaders = self._leaders
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
                leaders.at(last_received)
                if replay:
                    seen_at = min(us_to_datetime(last_received), wall)
                    if skipped_max is not None:
                        evaluator.advance_clock(us_to_datetime(skipped_max), seen_at)
                        skipped_max = None
            event_id = ids[i]
            if evaluator.wants(names[i], event_id, cols.follows[i]):
                out += evaluator.on_event(cols.received_event(i, received[i]), seen_at)
            elif skipped_max is None or occurred_us[i] > skipped_max:
                skipped_max = occurred_us[i]
            leaders.ids.add(event_id)
            self._watermark = key
        if skipped_max is not None:
            evaluator.advance_clock(us_to_datetime(skipped_max), seen_at)
        return out

    async def _persist_and_dispatch(self, step: _Step) -> list[Firing]:
        if not step.firings and step.state is None:
            return []
        return await self._dispatcher.dispatch(step.firings, partial(self._record, step=step))

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
                    new = await self._threads.run(
                        self._store.record, items, state, self._clock.now()
                    )
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

    async def read_state(self) -> EvaluatorState | None:
        return await self._threads.run(self._store.load_state)

    def restore(self, state: EvaluatorState | None) -> None:
        """Take the stored state back (after ``load``) and set the watermark to replay from:
        the stored one, at most an hour back; with none, evaluation starts now."""
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

    async def replay(self, *, catch_up: bool = False) -> None:
        """Evaluate every stored event after the watermark, slice by slice, to the end of what
        is committed. The listener keeps queueing meanwhile; queued events the replay already
        evaluated are skipped by key."""
        read = self._store.events_received_since
        replayed = 0
        while not self._stopping:
            after = self._watermark
            assert after is not None
            cols, received = await self._threads.run(read, after, REPLAY_CHUNK)
            if catch_up and self._lagging and self._follow is None and len(cols) < REPLAY_CHUNK:
                # Queue commits again from here on; what is in the store up to now is read
                # again below, and the overlap with the queue is skipped by key.
                self._lagging = False
                cols, received = await self._threads.run(read, after, REPLAY_CHUNK)
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
        if replayed and self._follow is None:  # following the store, every round replays
            log.info("automations: evaluated %d stored events after the watermark", replayed)
