"""The trigger-evaluation core (SPEC §7, Prefect P§5.2–5.10): events in, firings out.

(Longer than ~500 lines on purpose: ``Evaluator`` is one algorithm whose steps — arming,
windows, thresholds, composites, causal holds, ticks — share the same bucket state; cut
into modules it would read worse. Its persistent form is ``evaluator_state``.)

This module owns the *semantics* of triggers and nothing else — no I/O, no store, no actions,
no threads. ``Evaluator`` keeps, per loaded event trigger, one bucket per ``for_each`` key
(``start``, ``end``, ``count``, ``last_event``) and runs Prefect's algorithm on it:

* ``on_event(event)`` — reactive evaluation of every trigger covering the event, at the event's
  ``occurred`` (threshold and window rules, immediate triggers, ``after``/``expect`` arming,
  including an event in both), after ``follows`` causal ordering: an event whose leader has not
  been *processed* (a leader that is itself held does not count) is held until the leader is,
  then evaluated right after it, or released after 15 minutes.
* ``tick(now)`` — proactive evaluation on the *events clock* (``now`` shifted by how far behind
  real time the last event was), release of lost followers, and the sweep of stale buckets.

Compound and sequence triggers collect their children's firings. Herald's divergences
(SPEC §7): (1) ``load`` keeps the state of a trigger whose definition did not change, whatever
its ids; (2) a proactive trigger with ``after`` is armed only by ``after`` events; (3)
compound/sequence ``within`` compares the firings' ``occurred`` (event time); (4) a proactive
trigger that fired *resolves* when an expected event for the same key arrives.

All state is plain data (``collector.automations.evaluator_state``): ``state_snapshot()`` gives
a JSON-able dict, ``restore()`` takes it back, so the server can persist it with its watermark
and resume after a restart. Firing ids
are derived from what fired (automation, trigger path, key, window, event), so re-deriving a
firing after a restart gives the same id and the store can drop the duplicate.

Hooks for a server: ``wants(name)`` says whether an event can matter to any loaded trigger
(the rest only need ``advance_clock``), and ``skip(event, automation)`` lets the server's loop
guard keep an event from being evaluated against one automation.

An ``Evaluator`` is not thread-safe: one task owns it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from collector.automations.evaluator_state import (
    Bucket,
    BucketKey,
    Fired,
    NodeKey,
    TriggerState,
    event_id_of,
    restored,
    snapshot,
)
from collector.clock import Clock
from collector.domain.automation_records import Firing
from collector.domain.automations import Automation
from collector.domain.events import RESOURCE_ROLE, ReceivedEvent, format_time
from collector.domain.ids import derived_uuid
from collector.domain.matching import (
    any_labels_match,
    is_glob,
    labels_match,
    split_negation,
    value_matches,
)
from collector.domain.triggers import (
    RELATED_LABEL_PREFIX,
    CompoundTrigger,
    EventTrigger,
    SequenceTrigger,
    Trigger,
    iter_triggers,
)

# Prefect's constants (P Appendix A).
PRECEDING_EVENT_LOOKBACK = timedelta(minutes=15)  # first-window lookback; follower patience
SEEN_EVENT_TTL = timedelta(minutes=30)
SEEN_EVENT_MAX = 10_000
EXPIRED_BUCKET_BUFFER = timedelta(seconds=60)
# Herald: a proactive firing still resolves when its expected event comes back within this long
# (the default event retention); after that the record is dropped so that keys that never come
# back (a zombie process) do not accumulate.
RESOLVE_HORIZON = timedelta(days=7)


# --------------------------------------------------------------------------------------------
# What a trigger covers (pure; the evaluator and a backtest share these). Label and event-name
# patterns follow collector.domain.matching (Prefect's globs and `!` negation, P§4.2).


def expects(trigger: EventTrigger, name: str) -> bool:
    """The event counts toward the threshold (an empty ``expect`` counts every event)."""
    return not trigger.expect or any(value_matches(p, name) for p in trigger.expect)


def starts_after(trigger: EventTrigger, name: str) -> bool:
    """The event arms the trigger (never, when ``after`` is empty)."""
    return any(value_matches(p, name) for p in trigger.after)


def covers(trigger: EventTrigger, event: ReceivedEvent) -> bool:
    """The trigger is interested in the event (P§5.1): its name is expected or arms the
    trigger, ``match`` accepts the primary resource, and every ``match_related`` spec is
    satisfied by some related resource (an empty spec by none at all)."""
    if not (expects(trigger, event.event) or starts_after(trigger, event.event)):
        return False
    if not labels_match(trigger.match, event.resource):
        return False
    return all(any_labels_match(spec, event.related) for spec in trigger.related_specs())


def find_resource_label(event: ReceivedEvent, label: str) -> str | None:
    """A label of the primary resource, or ``related:<role>:<label>`` of the first related
    resource in that role; with no such role, the primary's literal label (Prefect's rule)."""
    if label.startswith(RELATED_LABEL_PREFIX):
        _, role, name = label.split(":", 2)
        for related in event.related:
            if related.get(RESOURCE_ROLE) == role:
                return related.get(name)
    return event.resource.get(label)


def bucketing_key(trigger: EventTrigger, event: ReceivedEvent) -> tuple[str, ...]:
    return tuple(find_resource_label(event, label) or "" for label in sorted(trigger.for_each))


def trigger_fingerprint(trigger: Trigger) -> str:
    """A digest of what a trigger *means*: its JSON without ids. Equal fingerprints at the
    same path mean the bucket state can be kept across an update (divergence 1)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    canonical = json.dumps(strip(trigger.model_dump(mode="json")), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# State


@dataclass(slots=True)
class _Node:
    automation: Automation
    path: str
    trigger: Trigger
    fingerprint: str
    parent: _Node | None
    index: int  # position among the parent's children
    key: NodeKey = ("", "")

    def __post_init__(self) -> None:
        self.key = (str(self.automation.id), self.path)


def _is_pattern(name: str) -> bool:
    negated, body = split_negation(name)
    return negated or is_glob(body)


def _occurred(event: ReceivedEvent) -> datetime:
    return event.occurred


def _firing_id(*parts: object) -> UUID:
    return UUID(derived_uuid(b"herald.firing", *(str(p).encode() for p in parts)))


# --------------------------------------------------------------------------------------------
# The evaluator


class Evaluator:
    """Evaluates the loaded automations' triggers.

    ``clock`` is wall time: it stamps the events clock and decides when a held follower is
    lost. Whether a follower's leader was already processed is answered from the ids of the
    last ``seen_max`` events (30 minutes at most, Prefect's cache); at high rates that window
    is short, so ``leader_processed`` may answer for older ids (e.g. "is it at or below the
    store's evaluation watermark?").
    """

    def __init__(
        self,
        clock: Clock,
        *,
        expired_bucket_buffer: timedelta = EXPIRED_BUCKET_BUFFER,
        seen_max: int = SEEN_EVENT_MAX,
        leader_processed: Callable[[UUID], bool] | None = None,
        skip: Callable[[ReceivedEvent, Automation], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._buffer = expired_bucket_buffer
        self._seen_max = seen_max
        self._leader_processed = leader_processed
        # The server's loop guard: True = do not evaluate this event against this automation.
        self._skip = skip
        self._candidate_cache: dict[str, list[_Node]] = {}  # event name -> _candidates()
        # Snapshot form of `seen` entries, built once per entry: formatting 10k times on every
        # snapshot would cost ~40 ms, and a server snapshots with every firing.
        self._seen_json: dict[UUID, list[str]] = {}
        self._nodes: dict[NodeKey, _Node] = {}
        self._event_nodes: list[_Node] = []
        self._proactive_nodes: list[_Node] = []
        # Which event triggers can care about an event name: exact names index straight to
        # their triggers; globs, negations and empty `expect` are checked on every event.
        self._by_name: dict[str, list[_Node]] = {}
        self._any_name: list[tuple[_Node, EventTrigger]] = []  # with its trigger, narrowed
        self._order: dict[NodeKey, int] = {}
        self._loaded = False
        self._s = TriggerState()

    # -- loading ----------------------------------------------------------------------------

    def load(self, automations: Iterable[Automation]) -> None:
        """Replace the loaded set. Disabled automations are not evaluated and lose their state;
        a trigger node whose definition (ids aside) is unchanged keeps its state."""
        nodes: dict[NodeKey, _Node] = {}
        for automation in automations:
            if not automation.enabled:
                continue
            by_path: dict[str, _Node] = {}
            for path, trigger in iter_triggers(automation.trigger):
                parent_path, _, last = path.rpartition(".triggers[")
                parent = by_path.get(parent_path) if parent_path else None
                index = int(last.rstrip("]")) if parent is not None else 0
                node = _Node(automation, path, trigger, trigger_fingerprint(trigger), parent, index)
                by_path[path] = node
                nodes[node.key] = node
        self._nodes = nodes
        self._event_nodes = [n for n in nodes.values() if isinstance(n.trigger, EventTrigger)]
        self._proactive_nodes = [
            n
            for n in self._event_nodes
            if isinstance(n.trigger, EventTrigger) and n.trigger.posture == "Proactive"
        ]
        self._order = {node.key: i for i, node in enumerate(self._event_nodes)}
        self._by_name, self._any_name = {}, []
        for node in self._event_nodes:
            assert isinstance(node.trigger, EventTrigger)
            names = [*node.trigger.expect, *node.trigger.after]
            if not node.trigger.expect or any(_is_pattern(n) for n in names):
                self._any_name.append((node, node.trigger))
            else:
                for name in dict.fromkeys(names):
                    self._by_name.setdefault(name, []).append(node)
        self._candidate_cache = {}
        self._loaded = True
        self._reconcile()

    def _reconcile(self) -> None:
        """Drop state of nodes that are gone or whose definition changed."""
        current = {key: node.fingerprint for key, node in self._nodes.items()}
        old = self._s.fingerprints
        for table in (self._s.buckets, self._s.child_firings, self._s.fired):
            for key in list(table):
                if key not in current or old.get(key) != current[key]:
                    del table[key]
        self._s.fingerprints = current

    # -- events -----------------------------------------------------------------------------

    def on_event(self, event: ReceivedEvent, now: datetime | None = None) -> list[Firing]:
        """Evaluate one committed event; returns the automation-level firings it caused
        (including those of followers it released). A repeated event id is ignored.

        ``now`` is when the event counts as seen (default: the clock). A server replaying
        stored events after a restart passes their ``received``, so that the events clock
        measures delivery lag and not the server's own downtime."""
        event_id = event_id_of(event)
        if event_id in self._s.seen or event_id in self._s.held:
            return []
        now = now if now is not None else self._clock.now()
        self._update_events_clock(event, now)
        if self._must_wait(event, now):
            self._hold(event)
            return []
        return self._process(event, now)

    def wants(
        self,
        name: str,
        event_id: UUID | str | None = None,
        follows: UUID | str | None = None,
    ) -> bool:
        """Whether ``on_event`` could do anything with such an event: some loaded trigger's
        ``expect``/``after`` names match it, held followers wait for it as their leader, or
        it follows an event that is itself held (it must wait in line too, so that its own
        followers wait for it: Prefect orders every event, covered or not). A server skips
        the other events cheaply (calling ``advance_clock`` for them)."""
        if event_id is not None and self._s.followers:
            leader = event_id if isinstance(event_id, UUID) else UUID(event_id)
            if leader in self._s.followers:
                return True
        if follows is not None and self._s.held:
            if (follows if isinstance(follows, UUID) else UUID(follows)) in self._s.held:
                return True
        return bool(self._candidates(name))

    def advance_clock(self, occurred: datetime, now: datetime | None = None) -> None:
        """Move the events clock for events that ``wants`` said to skip (P§5.8: every event
        moves it, not only the ones a trigger covers). ``now`` as in ``on_event``."""
        now = now if now is not None else self._clock.now()
        stamp = min(occurred, now)
        if self._s.events_clock is None or stamp >= self._s.events_clock:
            self._s.events_clock = stamp
        self._s.events_clock_updated = now

    def _hold(self, event: ReceivedEvent) -> None:
        event_id = event_id_of(event)
        self._s.held[event_id] = event
        assert event.follows is not None
        self._s.followers.setdefault(event.follows, []).append(event_id)

    def _unhold(self, event_id: UUID) -> ReceivedEvent | None:
        event = self._s.held.pop(event_id, None)
        if event is not None and event.follows is not None:
            waiting = self._s.followers.get(event.follows, [])
            if event_id in waiting:
                waiting.remove(event_id)
            if not waiting:
                self._s.followers.pop(event.follows, None)
        return event

    def _must_wait(self, event: ReceivedEvent, now: datetime) -> bool:
        # P§5.9: hold an event until its leader has been processed, unless it is too old to
        # wait (its leader may never come).
        leader = event.follows
        if leader is None or leader == event.id:
            return False
        if now - event.received >= PRECEDING_EVENT_LOOKBACK:
            return False
        if leader in self._s.held:
            # The leader arrived but is itself waiting for its own leader: it is stored, not
            # processed. Prefect records an event as seen only after processing it
            # (ordering/memory.py, `event_is_processing`), so its followers wait behind it and
            # are released after it, recursively.
            return True
        if leader in self._s.seen:
            return False
        return self._leader_processed is None or not self._leader_processed(leader)

    def _process(self, event: ReceivedEvent, now: datetime) -> list[Firing]:
        out: list[Firing] = []
        stack = [event]
        while stack:
            current = stack.pop()
            out += self._react(current)
            self._mark_seen(current, now)
            # Followers run right after their leader, earliest first (depth first, as Prefect;
            # iterative, so a long chain cannot exhaust the stack).
            released = [
                self._unhold(i) for i in list(self._s.followers.get(event_id_of(current), ()))
            ]
            stack += sorted((e for e in released if e is not None), key=_occurred, reverse=True)
        return out

    def _mark_seen(self, event: ReceivedEvent, now: datetime) -> None:
        seen = self._s.seen
        event_id = event_id_of(event)
        seen[event_id] = now
        self._seen_json.pop(event_id, None)
        seen.move_to_end(event_id)
        while len(seen) > self._seen_max:
            seen.popitem(last=False)

    def _update_events_clock(self, event: ReceivedEvent, now: datetime) -> None:
        # P§5.8: never backwards, never into the future.
        stamp = min(event.occurred, now)
        if self._s.events_clock is None or stamp >= self._s.events_clock:
            self._s.events_clock = stamp
        self._s.events_clock_updated = now

    def events_clock_offset(self) -> timedelta:
        """How far behind real time the last event was when it was seen (≤ 0)."""
        if self._s.events_clock is None or self._s.events_clock_updated is None:
            return timedelta(0)
        return self._s.events_clock - self._s.events_clock_updated

    def _react(self, event: ReceivedEvent) -> list[Firing]:
        """Reactive evaluation of one event (P§5.3) against every covering trigger."""
        out: list[Firing] = []
        occurred = event.occurred
        for node in self._candidates(event.event):
            trigger = node.trigger
            assert isinstance(trigger, EventTrigger)
            if not covers(trigger, event):
                continue
            if self._skip is not None and self._skip(event, node.automation):
                continue
            key = bucketing_key(trigger, event)
            is_expected = expects(trigger, event.event)
            if is_expected:
                self._maybe_resolve(node, key, event, out)
            buckets = self._s.buckets.setdefault(node.key, {})
            bucket: Bucket | None = None
            if trigger.after and starts_after(trigger, event.event):
                # An event that arms *and* counts starts at -1 so it leaves the bucket at 0.
                initial = -1 if is_expected else 0
                bucket = self._ensure(
                    buckets, key, occurred, occurred + trigger.within, event, initial
                )
            if bucket is None and not trigger.after and is_expected:
                # The first window reaches back so slightly older out-of-order events count.
                bucket = self._ensure(
                    buckets,
                    key,
                    occurred - PRECEDING_EVENT_LOOKBACK,
                    occurred + trigger.within,
                    event,
                    0,
                )
            if not is_expected:
                continue
            if bucket is None:
                bucket = buckets.get(key)
                if bucket is None:
                    continue  # `after` not seen: the trigger is not armed
            self._evaluate(node, buckets, key, bucket, occurred, event, out)
        return out

    def _candidates(self, name: str) -> list[_Node]:
        """The event triggers whose ``expect``/``after`` can match ``name``, in load order.
        Cached per name: glob and negated patterns are matched once per name, not per event."""
        found = self._candidate_cache.get(name)
        if found is None:
            exact = self._by_name.get(name, [])
            wide = [
                n
                for n, trigger in self._any_name
                if expects(trigger, name) or starts_after(trigger, name)
            ]
            found = sorted([*exact, *wide], key=lambda n: self._order[n.key]) if wide else exact
            if len(self._candidate_cache) >= 10_000:  # names are few in practice; bound it
                self._candidate_cache.clear()
            self._candidate_cache[name] = found
        return found

    @staticmethod
    def _ensure(
        buckets: dict[BucketKey, Bucket],
        key: BucketKey,
        start: datetime,
        end: datetime,
        event: ReceivedEvent | None,
        initial: int,
    ) -> Bucket:
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket(start, end, initial, event)
        elif event is not None:
            bucket.last_event = event
        return bucket

    def _evaluate(
        self,
        node: _Node,
        buckets: dict[BucketKey, Bucket],
        key: BucketKey,
        bucket: Bucket,
        now: datetime,
        event: ReceivedEvent | None,
        out: list[Firing],
    ) -> Bucket | None:
        """Prefect's ``evaluate`` (P§5.3): spend the event's count, fire when due, and open
        the next window. ``now`` is the event's ``occurred`` or the events-clock time."""
        trigger = node.trigger
        assert isinstance(trigger, EventTrigger)
        count = 1 if event is not None else 0
        if now < bucket.start:
            return bucket  # late, or already fired for this window: ignored entirely
        if count and (trigger.immediate or bucket.start <= now < bucket.end):
            bucket.count += 1
            bucket.last_event = event
            count = 0
        reactive = trigger.posture == "Reactive"
        ready = reactive or bucket.end <= now
        meets = bucket.count >= trigger.threshold if reactive else bucket.count < trigger.threshold
        if ready and meets:
            self._fire(node, key, bucket, now, event, out)
            buckets.pop(key, None)
        elif now < bucket.end:
            if (
                not reactive
                and not meets
                and event is not None
                and starts_after(trigger, event.event)
                and expects(trigger, event.event)
            ):
                # P§5.6 (heartbeats): once the window has reached its threshold (the
                # expectation is met), an event that arms and counts restarts the window at
                # itself, so the trigger fires `within` after the *last* one. Below the
                # threshold it only counts: the window opened by the first event stays
                # (Prefect's `evaluate`, `not meets_threshold` in triggers.py).
                occurred = event.occurred
                bucket = buckets[key] = Bucket(occurred, occurred + trigger.within, 0, event)
            return bucket
        if trigger.after:
            buckets.pop(key, None)  # wait for the next `after` event
            return None
        if trigger.within == timedelta(0):
            return None  # immediate triggers open no next window
        start = max(bucket.end, now)
        kept = buckets.get(key)  # still there unless we just fired
        new = buckets[key] = Bucket(
            start,
            start + trigger.within,
            0 if reactive else count,
            kept.last_event if kept is not None else None,
        )
        if reactive and count > 0:
            # The event fell after the old window: count it in the new one.
            return self._evaluate(node, buckets, key, new, now, event, out)
        return new

    def _fire(
        self,
        node: _Node,
        key: BucketKey,
        bucket: Bucket,
        now: datetime,
        event: ReceivedEvent | None,
        out: list[Firing],
    ) -> None:
        trigger = node.trigger
        assert isinstance(trigger, EventTrigger)
        triggering = event if event is not None else bucket.last_event
        proactive = trigger.posture == "Proactive"
        firing = Firing(
            id=_firing_id(
                node.automation.id,
                node.path,
                "triggered",
                *key,
                format_time(bucket.start),
                format_time(bucket.end),
                triggering.id if triggering is not None else "",
            ),
            automation_id=node.automation.id,
            trigger_id=trigger.id,
            trigger_path=node.path,
            kind="triggered",
            occurred=bucket.end if proactive else now,
            bucket_key=key,
            triggering_labels=dict(zip(sorted(trigger.for_each), key, strict=True)),
            triggering_event=triggering,
        )
        if proactive and node.parent is None:
            self._s.fired.setdefault(node.key, {})[key] = Fired(firing.id, bucket.start, bucket.end)
        self._propagate(node, firing, out)

    def _maybe_resolve(
        self, node: _Node, key: BucketKey, event: ReceivedEvent, out: list[Firing]
    ) -> None:
        # Divergence 4: the expected event came back for this key after the trigger fired.
        fired_by_key = self._s.fired.get(node.key, {})
        fired = fired_by_key.get(key)
        if fired is None or event.occurred < fired.start:
            return
        del fired_by_key[key]
        trigger = node.trigger
        assert isinstance(trigger, EventTrigger)
        out.append(
            Firing(
                id=_firing_id(node.automation.id, node.path, "resolved", fired.firing_id, event.id),
                automation_id=node.automation.id,
                trigger_id=trigger.id,
                trigger_path=node.path,
                kind="resolved",
                occurred=event.occurred,
                bucket_key=key,
                triggering_labels=dict(zip(sorted(trigger.for_each), key, strict=True)),
                triggering_event=event,
                resolves=fired.firing_id,
            )
        )

    # -- composite triggers -----------------------------------------------------------------

    def _propagate(self, node: _Node, firing: Firing, out: list[Firing]) -> None:
        if node.parent is None:
            out.append(firing)
        else:
            self._child_fired(node.parent, node.index, firing, out)

    def _child_fired(self, parent: _Node, index: int, firing: Firing, out: list[Firing]) -> None:
        """P§5.10, with ``within`` on event time (divergence 3)."""
        trigger = parent.trigger
        assert isinstance(trigger, CompoundTrigger | SequenceTrigger)
        if trigger.num_expected_firings == 1:
            self._propagate(parent, self._composite_firing(parent, [firing], firing), out)
            return
        store = self._s.child_firings.setdefault(parent.key, {})
        store[index] = firing  # one per child: a newer firing replaces an older one
        if trigger.within is not None:
            newest = max(f.occurred for f in store.values())
            for i, f in list(store.items()):
                if f.occurred < newest - trigger.within:
                    del store[i]
        if index not in store:
            return  # this firing is already too old to combine with the others
        if isinstance(trigger, CompoundTrigger):
            ready = len(store) >= trigger.num_expected_firings
        else:
            # Children in the declared order by `occurred`; a tie counts as in order.
            order = sorted(store, key=lambda i: (store[i].occurred, i))
            ready = order == list(range(len(trigger.triggers)))
        if not ready:
            return
        firings = sorted(store.values(), key=lambda f: f.occurred)
        store.clear()
        self._propagate(parent, self._composite_firing(parent, firings, firing), out)

    @staticmethod
    def _composite_firing(parent: _Node, firings: list[Firing], completing: Firing) -> Firing:
        labels: dict[str, str] = {}
        for f in firings:
            labels.update(f.triggering_labels)
        labels.update(completing.triggering_labels)
        return Firing(
            id=_firing_id(
                parent.automation.id, parent.path, "triggered", *sorted(str(f.id) for f in firings)
            ),
            automation_id=parent.automation.id,
            trigger_id=parent.trigger.id,
            trigger_path=parent.path,
            kind="triggered",
            occurred=max(f.occurred for f in firings),
            triggering_labels=labels,
            triggering_event=completing.triggering_event,
            firings=tuple(firings),
        )

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[Firing]:
        """Periodic work (P§5.4, §5.6, §5.9): release lost followers, evaluate proactive
        triggers as of ``now`` on the events clock, sweep stale buckets."""
        now = now if now is not None else self._clock.now()
        out: list[Firing] = []
        lost = sorted(
            (e for e in self._s.held.values() if now - e.received >= PRECEDING_EVENT_LOOKBACK),
            key=_occurred,
        )
        for event in lost:
            if self._unhold(event_id_of(event)) is not None:
                out += self._process(event, now)
        as_of = now + self.events_clock_offset()
        for node in self._proactive_nodes:
            self._proactive(node, as_of, out)
        self._sweep(as_of - self._buffer)
        self._expire_fired(as_of - RESOLVE_HORIZON)
        self._prune_seen(now)
        return out

    def _proactive(self, node: _Node, as_of: datetime, out: list[Firing]) -> None:
        trigger = node.trigger
        assert isinstance(trigger, EventTrigger)
        buckets = self._s.buckets.setdefault(node.key, {})
        if not trigger.for_each and not trigger.after:
            # Divergence 2: Prefect arms *every* proactive trigger without for_each here; with
            # `after`, Herald waits for an `after` event.
            self._ensure(buckets, (), as_of, as_of + trigger.within, None, 0)
        for key, bucket in sorted(buckets.items(), key=lambda kv: kv[1].start):
            if buckets.get(key) is not bucket:
                continue
            if bucket.count >= trigger.threshold:
                del buckets[key]  # the expectation was met: nothing to fire for this window
                continue
            self._evaluate(node, buckets, key, bucket, as_of, None, out)

    def _sweep(self, older_than: datetime) -> None:
        for buckets in self._s.buckets.values():
            for key in [k for k, b in buckets.items() if b.end <= older_than]:
                del buckets[key]

    def _expire_fired(self, older_than: datetime) -> None:
        for records in self._s.fired.values():
            for key in [k for k, r in records.items() if r.end <= older_than]:
                del records[key]

    def _prune_seen(self, now: datetime) -> None:
        seen = self._s.seen
        while seen:
            at = next(iter(seen.values()))
            if now - at < SEEN_EVENT_TTL:
                break
            seen.popitem(last=False)

    def next_due(self) -> datetime | None:
        """Wall-clock time by which ``tick`` has work (a window ends, a follower is lost);
        None when nothing is pending. Lets the server sleep until then."""
        offset = self.events_clock_offset()
        due: list[datetime] = []
        for node in self._proactive_nodes:
            trigger = node.trigger
            assert isinstance(trigger, EventTrigger)
            buckets = self._s.buckets.get(node.key) or {}
            if not trigger.for_each and not trigger.after and () not in buckets:
                return self._clock.now()  # its first window is not open yet
            due += [b.end - offset for b in buckets.values()]
        due += [e.received + PRECEDING_EVENT_LOOKBACK for e in self._s.held.values()]
        return min(due) if due else None

    # -- persistence ------------------------------------------------------------------------

    def state_snapshot(self, *, include_seen: bool = True) -> dict[str, Any]:
        """All evaluation state as JSON-able data (see ``restore``). The seen-ids (up to
        ``seen_max`` entries, most of the size) can be left out and saved apart with
        ``seen_snapshot``; ``restore`` takes the two merged again."""
        return snapshot(self._s, self.seen_snapshot() if include_seen else None)

    def seen_snapshot(self) -> list[list[str]]:
        """The seen-ids part of ``state_snapshot``: ``[[event id, time seen], …]``."""
        cache = self._seen_json
        out = []
        for event_id, at in self._s.seen.items():
            entry = cache.get(event_id)
            if entry is None:
                entry = cache[event_id] = [str(event_id), format_time(at)]
            out.append(entry)
        if len(cache) > 2 * len(self._s.seen) + 1_000:  # drop entries seen no longer holds
            self._seen_json = {i: cache[i] for i in self._s.seen if i in cache}
        return out

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace all evaluation state with a ``state_snapshot()``. Call before or after
        ``load``: state of triggers that changed or are gone is dropped either way."""
        self._s = restored(snapshot)
        self._seen_json = {}
        if self._loaded:
            self._reconcile()
