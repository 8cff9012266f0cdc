"""Backtests (SPEC §7, divergence 5): run an automation's trigger over stored history and list
the firings it would have had. No action runs, nothing is written.

History is replayed in ``occurred`` order as if every event had been delivered on time: a
``ManualClock`` stands at each event's ``occurred`` when it is evaluated, and between events
the clock jumps to each time ``next_due()`` names, so proactive windows end exactly when they
would have. ``follows`` ordering is not waited for (history is already in event-time order).
The same loop guard as the server applies.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from collector.automations.evaluator import Evaluator
from collector.automations.events import guard_skips
from collector.clock import ManualClock
from collector.domain.automation_records import Firing
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation
from collector.domain.events import us_to_datetime
from collector.domain.matching import is_glob, split_negation
from collector.domain.triggers import EventTrigger, iter_triggers
from collector.errors import InvalidInput

CHUNK = 5_000
MAX_FIRINGS = 10_000
MAX_TICKS_PER_GAP = 1_000_000

Progress = Callable[[int, int], None]  # (events done, events in range)


def exact_event_names(automation: Automation) -> list[str] | None:
    """The event names the trigger can cover, when they are all exact (the store can then
    read only those); None when any trigger takes a glob, a negation or any event."""
    names: set[str] = set()
    for _, trigger in iter_triggers(automation.trigger):
        if not isinstance(trigger, EventTrigger):
            continue
        if not trigger.expect:
            return None
        for name in (*trigger.expect, *trigger.after):
            negated, body = split_negation(name)
            if negated or is_glob(body):
                return None
            names.add(name)
    return sorted(names)


def _tick_until(
    evaluator: Evaluator, clock: ManualClock, until: datetime, out: list[Firing]
) -> None:
    """Run every tick that would have happened up to ``until``."""
    stuck = 0
    for _ in range(MAX_TICKS_PER_GAP):
        due = evaluator.next_due()
        if due is None or due > until or len(out) >= MAX_FIRINGS:
            return
        if due > clock.now():
            clock.set(due)
        out += evaluator.tick(clock.now())
        # A tick may need a second one at the same time (a window that met its expectation
        # is closed by one tick and the next one opened by the following); a third would
        # change nothing.
        stuck = stuck + 1 if evaluator.next_due() == due else 0
        if stuck >= 2:
            return


def backtest(
    store: AutomationStateStore,
    automation: Automation,
    since: datetime,
    until: datetime,
    *,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[list[Firing], int, bool]:
    """Replay ``[since, until]`` through ``automation``'s trigger.

    Returns (firings, events read, truncated): at most ``MAX_FIRINGS`` firings are kept.
    """
    if until <= since:
        raise InvalidInput("--until must be later than --since")
    clock = ManualClock(since)
    evaluator = Evaluator(clock, leader_processed=lambda _leader: True, skip=guard_skips)
    evaluator.load([automation.model_copy(update={"enabled": True})])
    names = exact_event_names(automation)
    total = store.count_events_between(since, until, names)
    if progress is not None:
        progress(0, total)
    out: list[Firing] = []
    after: tuple[int, str] | None = None
    done = 0
    while len(out) < MAX_FIRINGS:
        if stop is not None and stop():
            break
        cols, _received = store.events_between(since, until, after, CHUNK, names)
        n = len(cols)
        if not n:
            break
        for i in range(n):
            occurred = us_to_datetime(cols.occurred_us[i])
            _tick_until(evaluator, clock, occurred, out)
            if occurred > clock.now():
                clock.set(occurred)
            if not evaluator.wants(cols.names[i]):
                evaluator.advance_clock(occurred)
                continue
            # As if delivered on time: received when it occurred.
            event = cols.received_event(i, cols.occurred_us[i])
            out += evaluator.on_event(event)
        done += n
        after = (cols.occurred_us[n - 1], cols.ids[n - 1])
        if progress is not None:
            progress(done, total)
        if n < CHUNK:
            break
    _tick_until(evaluator, clock, until, out)
    truncated = len(out) >= MAX_FIRINGS
    return out[:MAX_FIRINGS], done, truncated


def firing_summary(firing: Firing) -> dict[str, Any]:
    """A firing as a backtest lists it (the full firing minus nested event bodies)."""
    data = firing.to_dict()
    event = firing.triggering_event
    data["triggering_event"] = (
        {
            "id": str(event.id),
            "event": event.event,
            "occurred": data["triggering_event"]["occurred"],
            "resource_id": event.resource.get("prefect.resource.id"),
        }
        if event is not None
        else None
    )
    data["firings"] = [f["id"] for f in data["firings"]]
    return data
