"""``AutomationStateStore``: what the automations runtime needs from its store.

The runtime (``collector.automations``) depends on this interface only; the DuckDB store
implements it (``collector.store.automations_store.AutomationStore``) and ``collector/app.py``
passes that in. A second storage backend implements the same calls.

Four groups: the automations themselves (CRUD, secrets kept out of the public form), firings
and their action runs (stored once by id, outcomes batched), the evaluator's state with its
watermark, and the event reads evaluation needs (the replay after a restart, leader lookups,
backtests). Every call blocks: the runtime makes them on worker threads. Errors are
``collector.errors``: ``NotFound``, ``Conflict``, ``InvalidAutomation`` (a secret marker the
store does not hold), ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from collector.domain.automation_records import (
    ActionRun,
    EvaluatorState,
    EventKey,
    NewFiring,
    StoredAutomation,
    Unfinished,
)
from collector.domain.automations import Automation
from collector.domain.columns import EventColumns


class AutomationEventSource(Protocol):
    """The event reads evaluation needs: a backend that keeps the automations state apart from
    its events (the DuckLake backend: state in PostgreSQL, events in the lake) composes its
    ``AutomationStateStore`` from one of these."""

    def events_received_since(self, after: EventKey, limit: int) -> tuple[EventColumns, list[int]]:
        """The first ``limit`` events after ``after`` in (received, occurred, id) order, with
        their received times (µs)."""
        ...

    def event_received_before(self, event_id: str, received_us: int, window_us: int) -> bool:
        """The event is stored and was received in ``[received_us - window_us, received_us)``."""
        ...

    def stored_event_name(self, event_id: UUID, received_since: datetime) -> str | None:
        """The name of a stored event received since ``received_since``, or None."""
        ...

    def count_events_between(
        self, since: datetime, until: datetime, names: list[str] | None = None
    ) -> int:
        """How many events occurred in ``[since, until]`` (only these names, if given)."""
        ...

    def events_between(
        self,
        since: datetime,
        until: datetime,
        after: tuple[int, str] | None,
        limit: int,
        names: list[str] | None = None,
    ) -> tuple[EventColumns, list[int]]:
        """Events that occurred in ``[since, until]`` in (occurred, id) order after the keyset
        ``after`` (occurred µs, id), with their received times (µs)."""
        ...


class ForwardedEventSource:
    """The event reads of an automations store whose events live elsewhere (a lake): each
    ``AutomationEventSource`` method forwarded to ``self._events``, so a state store that keeps
    its tables in one database and reads events from another writes the forwarding once."""

    _events: AutomationEventSource

    def events_received_since(self, after: EventKey, limit: int) -> tuple[EventColumns, list[int]]:
        return self._events.events_received_since(after, limit)

    def event_received_before(self, event_id: str, received_us: int, window_us: int) -> bool:
        return self._events.event_received_before(event_id, received_us, window_us)

    def stored_event_name(self, event_id: UUID, received_since: datetime) -> str | None:
        return self._events.stored_event_name(event_id, received_since)

    def count_events_between(
        self, since: datetime, until: datetime, names: list[str] | None = None
    ) -> int:
        return self._events.count_events_between(since, until, names)

    def events_between(
        self,
        since: datetime,
        until: datetime,
        after: tuple[int, str] | None,
        limit: int,
        names: list[str] | None = None,
    ) -> tuple[EventColumns, list[int]]:
        return self._events.events_between(since, until, after, limit, names)


class AutomationStateStore(AutomationEventSource, Protocol):
    """Automations, their firings and action runs, the evaluator state, and event reads."""

    # -- automations ------------------------------------------------------------------------

    def list_automations(self) -> list[StoredAutomation]:
        """Every automation, by name then creation."""
        ...

    def get_automation(self, automation_id: UUID) -> StoredAutomation | None: ...

    def find_by_name(self, name: str) -> list[StoredAutomation]:
        """The automations with this exact name, oldest first."""
        ...

    def insert_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        """Store a new automation; ``Conflict`` if its id is taken."""
        ...

    def replace_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        """Replace a stored automation (same id) as a whole; ``NotFound`` if there is none.
        A secret sent back as its marker keeps the stored value."""
        ...

    def delete_automation(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation (its firings and runs stay, as history); ``NotFound``."""
        ...

    # -- firings and action runs ------------------------------------------------------------

    def record(
        self, firings: Iterable[NewFiring], state: EvaluatorState | None, now: datetime
    ) -> set[UUID]:
        """Atomically: store the firings that are new (by id) with their action runs, and
        the evaluator state. Returns the ids of the firings that were new."""
        ...

    def update_runs(self, runs: Sequence[ActionRun], announced: Sequence[UUID] = ()) -> None:
        """Atomically: record the outcome of action runs and mark firings announced."""
        ...

    def unfinished(self) -> list[Unfinished]:
        """Firings not yet announced or with runs still ``triggered``, oldest first."""
        ...

    def history(
        self, automation_id: UUID | None, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` firings (of one automation, or all; only those with a run in
        ``status`` if given), newest first, each with its action runs (JSON-able)."""
        ...

    def run_counts(self, automation_id: UUID | None) -> dict[str, int]:
        """How many action runs (of one automation, or all) are in each status."""
        ...

    # -- evaluator state --------------------------------------------------------------------

    def load_state(self) -> EvaluatorState | None:
        """The state last stored with ``record``, or None."""
        ...
