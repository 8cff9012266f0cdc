"""``ActionLanes``: one bounded queue of action runs per automation, the rate limit in front
of it, and what starts the runs (SPEC §7; Herald issue 9, "a runaway automation cannot be
stopped").

* **Admission.** Before a firing is stored, ``admit`` decides what its action runs will be:
  *admitted* (they wait in the automation's lane), *skipped* (the automation's rate limit is
  used up, or its lane is full: ``automations.max_queued_actions``) or *cancelled* (the
  automation is being paused or deleted). Skipped and cancelled runs are stored finished, in
  the firing's own transaction, and never take memory here.
* **Starting.** At most ``max_running`` runs run at once in all, at most
  ``max_running_per_lane`` of one automation; lanes take turns (round robin), so a hot
  automation cannot keep the others waiting. A run waits in its lane — not in a task — until
  it starts: a backlog of thousands costs a deque entry each, and cancelling it is one swap.
* **Cancelling.** ``close`` stops an automation's lane at once (nothing more starts; new
  admissions are cancelled), ``cancel`` hands back what was waiting (the runner records it as
  cancelled) and signals the runs in flight, so a webhook stops retrying. ``open`` undoes
  ``close`` (resume, or a pause that failed).

Rate limit: at most ``max_firings`` admitted firings in any window of ``within`` seconds (a
sliding window: the times of the admitted firings are kept, at most ``max_firings`` of them).
It lives in memory: a restart starts every window afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from collector.automations.actions import StopSignal
from collector.config import AutomationsConfig
from collector.domain.automations import Automation, RateLimit

T = TypeVar("T")
# How long a closed lane of a deleted automation is kept: firings already evaluated against it
# (pipelined steps) must still find it closed.
CLOSED_LANE_KEEP_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit in force: at most ``max_firings`` firings per ``within`` seconds."""

    max_firings: int
    within: float

    def describe(self) -> str:
        firings = "firing" if self.max_firings == 1 else "firings"
        return f"at most {self.max_firings} {firings} per {self.within:g} s"


def effective_limit(automation: Automation, config: AutomationsConfig) -> Limit | None:
    """The automation's own ``rate_limit``; without one, the server's default when an action
    calls out (webhook, command); ``"off"``: none."""
    setting = automation.rate_limit
    if setting == "off":
        return None
    if isinstance(setting, RateLimit):
        return Limit(setting.max_firings, setting.within.total_seconds())
    if config.rate_limit_max_firings > 0 and automation.calls_out():
        return Limit(config.rate_limit_max_firings, config.rate_limit_within_seconds)
    return None


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``admit`` decided for one firing's runs. ``status`` None: admitted (``runs``
    places reserved in the lane, to be ``enqueue``d or ``release``d); else ``skipped`` or
    ``cancelled`` for all of them, with ``reason``."""

    automation_id: UUID
    epoch: int
    runs: int
    status: str | None = None
    reason: str | None = None


class _Lane(Generic[T]):
    __slots__ = (
        "closed",
        "closed_at",
        "epoch",
        "fired",
        "in_turns",
        "pending",
        "reserved",
        "running",
        "stop",
    )

    def __init__(self) -> None:
        self.pending: deque[T] = deque()
        self.reserved = 0  # admitted runs whose firing is being stored
        self.running = 0
        self.epoch = 0  # bumped by cancel: admissions from before are void
        self.closed: str | None = None  # why nothing may start (paused, deleted)
        self.closed_at = 0.0
        self.fired: deque[float] = deque()  # admission times inside the rate window
        self.stop = StopSignal()  # what the runs in flight watch
        self.in_turns = False

    @property
    def waiting(self) -> int:
        return len(self.pending) + self.reserved


class ActionLanes(Generic[T]):
    """Per-automation action queues. Everything runs on the event loop (no locks)."""

    def __init__(
        self,
        *,
        max_queued: int,
        max_running: int,
        max_running_per_lane: int,
        execute: Callable[[T, StopSignal], Awaitable[None]],
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> None:
        self._max_queued = max_queued
        self._max_running = max_running
        self._per_lane = max_running_per_lane
        self._execute = execute
        self._spawn = spawn
        self._lanes: dict[UUID, _Lane[T]] = {}
        self._turns: deque[_Lane[T]] = deque()  # lanes with pending runs, in turn order
        self._running = 0
        self._stopped = False

    def _lane(self, automation_id: UUID) -> _Lane[T]:
        lane = self._lanes.get(automation_id)
        if lane is None:
            lane = self._lanes[automation_id] = _Lane()
        return lane

    # -- admission --------------------------------------------------------------------------

    def admit(self, automation_id: UUID, runs: int, limit: Limit | None, now: float) -> Admission:
        """Decide one firing's ``runs`` action runs (``now``: seconds, the runner's clock)."""
        lane = self._lane(automation_id)
        if lane.closed is not None:
            return Admission(automation_id, lane.epoch, 0, "cancelled", lane.closed)
        if runs == 0:
            return Admission(automation_id, lane.epoch, 0)
        if limit is not None:
            fired = lane.fired
            while fired and fired[0] <= now - limit.within:
                fired.popleft()
            while len(fired) > limit.max_firings:  # the limit was lowered
                fired.popleft()
            if len(fired) >= limit.max_firings:
                return Admission(
                    automation_id,
                    lane.epoch,
                    0,
                    "skipped",
                    f"rate limit: {limit.describe()} run their actions",
                )
        waiting = lane.waiting
        if waiting and waiting + runs > self._max_queued:
            return Admission(
                automation_id,
                lane.epoch,
                0,
                "skipped",
                f"the automation's action queue is full ({waiting} runs waiting; "
                f"automations.max_queued_actions = {self._max_queued})",
            )
        lane.reserved += runs
        if limit is not None:
            lane.fired.append(now)
        return Admission(automation_id, lane.epoch, runs)

    def release(self, admission: Admission) -> None:
        """Give back an admission's places (its firing was not new, or was not stored)."""
        if admission.runs:
            self._lane(admission.automation_id).reserved -= admission.runs

    def enqueue(self, admission: Admission, items: list[T]) -> bool:
        """Queue an admitted firing's runs once it is stored. False: the automation was
        cancelled since (or the server is stopping) — the caller records them cancelled."""
        self.release(admission)
        lane = self._lane(admission.automation_id)
        if lane.epoch != admission.epoch or lane.closed is not None:
            return False
        self._add(lane, items)
        return True

    def resume(self, automation_id: UUID, items: list[T]) -> None:
        """Queue runs a stopped process left unfinished (admitted before the restart)."""
        self._add(self._lane(automation_id), items)

    def _add(self, lane: _Lane[T], items: list[T]) -> None:
        if not items:
            return
        lane.pending.extend(items)
        if not lane.in_turns:
            lane.in_turns = True
            self._turns.append(lane)
        self._pump()

    # -- pause, resume, delete --------------------------------------------------------------

    def closed_reason(self, automation_id: UUID) -> str | None:
        """Why the automation's lane is closed (None: it is open)."""
        lane = self._lanes.get(automation_id)
        return lane.closed if lane is not None else None

    def close(self, automation_id: UUID, reason: str) -> None:
        """Nothing more of this automation starts from now on; new admissions are cancelled
        with ``reason``. What waits stays queued until ``cancel`` (or ``open``)."""
        lane = self._lane(automation_id)
        lane.closed = reason
        lane.closed_at = time.monotonic()

    def cancel(self, automation_id: UUID) -> list[T]:
        """Take every waiting run out of a lane (the caller records them cancelled), make
        admissions not yet queued void, and tell the runs in flight to stop retrying."""
        lane = self._lanes.get(automation_id)
        if lane is None:
            return []
        taken = list(lane.pending)
        lane.pending.clear()
        lane.epoch += 1
        lane.stop.set(lane.closed or "the automation was stopped")
        lane.stop = StopSignal()
        return taken

    def open(self, automation_id: UUID) -> None:
        """Let an automation's runs start again (resumed, or a pause that did not happen)."""
        lane = self._lanes.get(automation_id)
        if lane is None or lane.closed is None:
            return
        lane.closed = None
        self._pump()

    def restore(self, automation_id: UUID, closed: str | None) -> None:
        """Put a lane back as ``closed_reason`` had it (a pause or delete that failed)."""
        if closed is None:
            self.open(automation_id)
        else:
            self._lane(automation_id).closed = closed

    def prune(self, existing: set[UUID]) -> None:
        """Forget idle lanes of automations that no longer exist (a closed one only after a
        while: firings evaluated before the delete must still find it closed)."""
        cutoff = time.monotonic() - CLOSED_LANE_KEEP_SECONDS
        for automation_id, lane in list(self._lanes.items()):
            if (
                automation_id not in existing
                and (lane.closed is None or lane.closed_at < cutoff)
                and not lane.waiting
                and not lane.running
            ):
                del self._lanes[automation_id]

    def stop(self) -> None:
        """The server is stopping: start nothing more (what waits stays ``triggered`` in the
        store and is resumed after a restart)."""
        self._stopped = True

    # -- starting ---------------------------------------------------------------------------

    def _next(self) -> _Lane[T] | None:
        turns = self._turns
        for _ in range(len(turns)):
            lane = turns[0]
            if not lane.pending:
                turns.popleft()
                lane.in_turns = False
                continue
            turns.rotate(-1)
            if lane.closed is None and lane.running < self._per_lane:
                return lane
        return None

    def _pump(self) -> None:
        while self._running < self._max_running and not self._stopped:
            lane = self._next()
            if lane is None:
                return
            item = lane.pending.popleft()
            lane.running += 1
            self._running += 1
            self._spawn(self._go(lane, item, lane.stop))

    async def _go(self, lane: _Lane[T], item: T, stop: StopSignal) -> None:
        next_one = True
        try:
            await self._execute(item, stop)
        except (asyncio.CancelledError, GeneratorExit):
            next_one = False  # the loop is shutting down: start nothing in its place
            raise
        finally:
            lane.running -= 1
            self._running -= 1
            if next_one:
                self._pump()

    # -- numbers ----------------------------------------------------------------------------

    def waiting(self, automation_id: UUID) -> int:
        lane = self._lanes.get(automation_id)
        return len(lane.pending) if lane is not None else 0

    def running(self, automation_id: UUID | None = None) -> int:
        if automation_id is None:
            return self._running
        lane = self._lanes.get(automation_id)
        return lane.running if lane is not None else 0
