"""``AutomationStore``: the automation tables (SPEC §5, §7) and the event reads the automation
runtime needs — the ``AutomationStateStore`` of ``collector.domain.automation_state``.

It owns the SQL for ``automations``, ``automation_firings``, ``action_runs`` and
``automation_state`` (schema version 2); the event reads (replay, leader lookups, backtests)
come from ``AutomationEventReads`` (``automation_events.py``). Writes go through
``EventStore.transaction`` so they share the store's one write lock with the ingest writer;
reads use their own cursors. No evaluation and no actions here.

Secrets: the ``automations.body`` column holds an automation's *public* form (user SQL reads
it), with markers in place of secret values; the values live in the ``SecretVault`` beside the
store, and every read here puts them back (``StoredAutomation.automation`` is what actions
run with, ``StoredAutomation.to_dict()`` the public form). See
``collector.domain.secret_markers``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import duckdb
import orjson
import pyarrow as pa

from collector.domain import automation_rows
from collector.domain.automation_records import (
    ActionRun,
    EvaluatorState,
    NewFiring,
    StoredAutomation,
    Unfinished,
)
from collector.domain.automation_rows import (
    AUTOMATION_COLUMNS,
    FIRING_COLUMNS,
    RUN_COLUMNS,
    SEEN_KEY,
    STATE_KEY,
    automation_values,
    utc,
)
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation, parse_automation
from collector.domain.events import us_to_datetime
from collector.domain.secret_markers import refs_in, resolve, split
from collector.errors import NotFound, StoreError
from collector.store.automation_events import AutomationEventReads
from collector.store.duckdb_store import EventStore
from collector.store.secret_vault import SecretVault

_dumps = orjson.dumps
_STAMP = pa.timestamp("us", tz="UTC")
# The Arrow types of the outcome columns (None values need a type to be inferred from).
_OUTCOME_TYPES = {
    "status": pa.string(),
    "reason": pa.string(),
    "detail": pa.string(),
    "response_status": pa.int32(),
    "started": _STAMP,
    "finished": _STAMP,
}


def _outcome_arrays(runs: Sequence[ActionRun]) -> dict[str, pa.Array]:
    """The outcome columns of action runs as typed Arrow arrays."""
    return {
        name: pa.array(values, _OUTCOME_TYPES[name])
        for name, values in automation_rows.run_outcomes(runs).items()
    }


class AutomationStore(AutomationEventReads, AutomationStateStore):
    """The automation tables of one ``EventStore`` (the ``AutomationStateStore`` the
    automations runtime uses)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._vault = SecretVault(store.path, read_only=store.read_only)
        # Vault and table change together: one automation write at a time.
        self._writes = threading.Lock()
        if not store.read_only:
            self.protect_stored_secrets()

    # -- automations ------------------------------------------------------------------------

    def _automation(self, row: tuple[Any, ...]) -> StoredAutomation:
        body, created, updated = row
        public = orjson.loads(body)
        real = resolve(public, self._vault.snapshot())
        return StoredAutomation(parse_automation(real), utc(created), utc(updated), public)

    def list_automations(self) -> list[StoredAutomation]:
        """Every automation, by name then creation (Prefect's default sort is NAME_ASC)."""
        rows = self._read(f"SELECT {AUTOMATION_COLUMNS} FROM automations ORDER BY name, created")
        return [self._automation(r) for r in rows]

    def get_automation(self, automation_id: UUID) -> StoredAutomation | None:
        rows = self._read(
            f"SELECT {AUTOMATION_COLUMNS} FROM automations WHERE id = ?", [automation_id]
        )
        return self._automation(rows[0]) if rows else None

    def find_by_name(self, name: str) -> list[StoredAutomation]:
        rows = self._read(
            f"SELECT {AUTOMATION_COLUMNS} FROM automations WHERE name = ? ORDER BY created",
            [name],
        )
        return [self._automation(r) for r in rows]

    def _prepare(
        self, automation: Automation, previous: dict[str, Any] | None
    ) -> tuple[Automation, dict[str, Any]]:
        """The automation with real values (markers sent back resolved) and its public form;
        its secret values are in the vault when this returns."""
        body = automation.model_dump(mode="json")
        vault = self._vault.snapshot()
        real = resolve(body, vault, strict=True)
        reuse = {vault[r]: r for r in refs_in(previous) if r in vault} if previous else {}
        public, found = split(real, reuse)
        self._vault.add(found)
        return (parse_automation(real) if real != body else automation), public

    def _forget_unused_secrets(self) -> None:
        # After the commit: values no stored automation refers to any more are dropped.
        try:
            rows = self._read("SELECT body FROM automations")
        except StoreError:
            return
        refs: set[str] = set()
        for (body,) in rows:
            refs |= refs_in(orjson.loads(body))
        self._vault.retain(refs)

    def protect_stored_secrets(self) -> int:
        """Move secrets that stored bodies still hold in plain text (saved before secrets were
        kept apart) into the vault; returns how many automations were rewritten. Events
        already stored about them are not rewritten: rotate such secrets."""
        rewritten = 0
        with self._writes:
            for automation_id, body in self._read("SELECT id, body FROM automations"):
                public, found = split(orjson.loads(body), {})
                if not found:
                    continue
                self._vault.add(found)
                with self._store.transaction() as cur:
                    cur.execute(
                        "UPDATE automations SET body = ? WHERE id = ?",
                        [_dumps(public).decode(), automation_id],
                    )
                rewritten += 1
        return rewritten

    def insert_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        """Store a new automation; ``Conflict`` if its id is taken."""
        with self._writes:
            automation, public = self._prepare(automation, None)
            with self._store.transaction() as cur:
                taken = cur.execute(
                    "SELECT 1 FROM automations WHERE id = ?", [automation.id]
                ).fetchone()
                if taken:
                    raise automation_rows.id_taken(automation.id)
                cur.execute(
                    "INSERT INTO automations (id, name, description, enabled, tags, body, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [automation.id, *automation_values(automation, public), now, now],
                )
            self._forget_unused_secrets()
        return StoredAutomation(automation, now, now, public)

    def replace_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        """Replace a stored automation (same id) as a whole; ``NotFound`` if there is none.
        A secret sent back as its marker keeps the stored value."""
        with self._writes:
            rows = self._read("SELECT body FROM automations WHERE id = ?", [automation.id])
            previous = orjson.loads(rows[0][0]) if rows else None
            automation, public = self._prepare(automation, previous)
            with self._store.transaction() as cur:
                row = cur.execute(
                    "SELECT created FROM automations WHERE id = ?", [automation.id]
                ).fetchone()
                if row is None:
                    raise NotFound(f"Automation with id '{automation.id}' not found.")
                cur.execute(
                    "UPDATE automations SET name = ?, description = ?, enabled = ?, tags = ?, "
                    "body = ?, updated = ? WHERE id = ?",
                    [*automation_values(automation, public), now, automation.id],
                )
            self._forget_unused_secrets()
        return StoredAutomation(automation, utc(row[0]), now, public)

    def delete_automation(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation (its firings and action runs stay, as history; its secrets
        go)."""
        with self._writes:
            with self._store.transaction() as cur:
                row = cur.execute(
                    f"SELECT {AUTOMATION_COLUMNS} FROM automations WHERE id = ?",
                    [automation_id],
                ).fetchone()
                if row is None:
                    raise NotFound(f"Automation with id '{automation_id}' not found.")
                cur.execute("DELETE FROM automations WHERE id = ?", [automation_id])
            stored = self._automation(row)
            self._forget_unused_secrets()
        return stored

    # -- firings and action runs ------------------------------------------------------------

    def record(
        self, firings: Iterable[NewFiring], state: EvaluatorState | None, now: datetime
    ) -> set[UUID]:
        """In one transaction: store the firings that are new (by id) with their action runs,
        and the evaluator state. Returns the ids of the firings that were new.

        Rows go in as Arrow tables, one statement per table: a runaway automation brings
        thousands of firings per step, and a statement per row (~2 ms each) held the store's
        write lock for seconds — ingest and a pause waited behind it (issue 9)."""
        items = list(firings)
        new: set[UUID] = set()
        with self._store.transaction() as cur:
            if items:
                new = self._insert_firings(cur, items, now)
                runs = [run for item in items if item.firing.id in new for run in item.runs]
                if runs:
                    self._insert_runs(cur, runs, now)
            if state is not None:
                self._save_state(cur, state, now)
        return new

    @staticmethod
    def _insert_firings(
        cur: duckdb.DuckDBPyConnection, items: list[NewFiring], now: datetime
    ) -> set[UUID]:
        firings = [item.firing for item in items]
        table = pa.table(
            {
                "id": [str(f.id) for f in firings],
                "automation_id": [str(f.automation_id) for f in firings],
                "kind": [f.kind for f in firings],
                "occurred": pa.array([f.occurred for f in firings], _STAMP),
                "trigger_path": [f.trigger_path for f in firings],
                "bucket_key": [_dumps(list(f.bucket_key)).decode() for f in firings],
                "triggering_event_id": pa.array(
                    [
                        str(f.triggering_event.id) if f.triggering_event is not None else None
                        for f in firings
                    ],
                    pa.string(),
                ),
                "event_id": [str(item.event_id) for item in items],
                "body": [_dumps(f.to_dict()).decode() for f in firings],
            }
        )
        cur.register("new_firings", table)
        try:
            # Ids already stored (re-derived after a restart) are ignored: not new.
            rows = cur.execute(
                "INSERT OR IGNORE INTO automation_firings (id, automation_id, kind, occurred, "
                "trigger_path, bucket_key, triggering_event_id, event_id, announced, body, "
                "created) SELECT id::UUID, automation_id::UUID, kind, occurred, trigger_path, "
                "bucket_key, triggering_event_id::UUID, event_id::UUID, false, body, ? "
                "FROM new_firings RETURNING id",
                [now],
            ).fetchall()
        finally:
            cur.unregister("new_firings")
        return {row[0] for row in rows}

    @staticmethod
    def _insert_runs(cur: duckdb.DuckDBPyConnection, runs: list[ActionRun], now: datetime) -> None:
        # A run decided at once (skipped, cancelled) is stored finished.
        for run in runs:
            run.created = now
        table = pa.table(
            {
                "id": [str(r.id) for r in runs],
                "firing_id": [str(r.firing_id) for r in runs],
                "automation_id": [str(r.automation_id) for r in runs],
                "action_list": [r.action_list for r in runs],
                "action_index": pa.array([r.action_index for r in runs], pa.int32()),
                "action_type": [r.action_type for r in runs],
                "phase": [r.phase for r in runs],
                **_outcome_arrays(runs),
            }
        )
        cur.register("new_runs", table)
        try:
            cur.execute(
                f"INSERT OR IGNORE INTO action_runs ({RUN_COLUMNS}) SELECT id::UUID, "
                "firing_id::UUID, automation_id::UUID, action_list, action_index, action_type, "
                "phase, status, reason, detail, response_status, ?, started, finished "
                "FROM new_runs",
                [now],
            )
        finally:
            cur.unregister("new_runs")

    def update_runs(self, runs: Sequence[ActionRun], announced: Sequence[UUID] = ()) -> None:
        """In one transaction: record the outcome of many action runs (status, reason,
        detail, times) and mark firings announced. The runner batches this bookkeeping
        instead of a transaction per run; the rows go in as one Arrow table (binding Python
        lists as parameters costs ~100 µs per value)."""
        with self._store.transaction() as cur:
            if runs:
                cur.register(
                    "run_updates",
                    pa.table(
                        {
                            "id": [str(r.id) for r in runs],
                            **_outcome_arrays(runs),
                        }
                    ),
                )
                try:
                    cur.execute(
                        "UPDATE action_runs AS r SET status = u.status, reason = u.reason, "
                        "detail = u.detail, response_status = u.response_status, "
                        "started = u.started, finished = u.finished "
                        "FROM run_updates AS u WHERE r.id = u.id::UUID"
                    )
                finally:
                    cur.unregister("run_updates")
            if announced:
                cur.register("announced_firings", pa.table({"id": [str(i) for i in announced]}))
                try:
                    cur.execute(
                        "UPDATE automation_firings AS f SET announced = true "
                        "FROM announced_firings AS u WHERE f.id = u.id::UUID"
                    )
                finally:
                    cur.unregister("announced_firings")

    def unfinished(self) -> list[Unfinished]:
        """Firings not yet announced, or with action runs still ``triggered`` — the work a
        stopped process left; oldest first."""
        rows = self._read(
            "SELECT f.id, f.body, f.event_id, f.announced FROM automation_firings AS f "
            "WHERE NOT f.announced OR EXISTS (SELECT 1 FROM action_runs AS r "
            "WHERE r.firing_id = f.id AND r.status = 'triggered') ORDER BY f.created, f.occurred"
        )
        if not rows:
            return []
        runs = automation_rows.runs_by_firing(
            self._read(
                f"SELECT {RUN_COLUMNS} FROM action_runs WHERE status = 'triggered' "
                "AND list_contains(?, firing_id) ORDER BY action_list, action_index",
                [[r[0] for r in rows]],
            )
        )
        return automation_rows.unfinished(rows, runs)

    def history(
        self, automation_id: UUID | None, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` firings (of one automation, or all; only those with an action
        run in ``status`` if given), newest first, each with its action runs."""
        conditions: list[str] = []
        params: list[Any] = []
        if automation_id:
            conditions.append("f.automation_id = ?")
            params.append(automation_id)
        if status:
            conditions.append(
                "EXISTS (SELECT 1 FROM action_runs AS r WHERE r.firing_id = f.id AND r.status = ?)"
            )
            params.append(status)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._read(
            f"SELECT {FIRING_COLUMNS} FROM automation_firings AS f {where} "
            "ORDER BY occurred DESC, created DESC LIMIT ?",
            [*params, limit],
        )
        if not rows:
            return []
        runs = automation_rows.runs_by_firing(
            self._read(
                f"SELECT {RUN_COLUMNS} FROM action_runs WHERE list_contains(?, firing_id) "
                "ORDER BY created, action_list, action_index",
                [[r[0] for r in rows]],
            )
        )
        return automation_rows.history(rows, runs)

    def run_counts(self, automation_id: UUID | None) -> dict[str, int]:
        """How many action runs (of one automation, or all) are in each status."""
        where, params = ("WHERE automation_id = ?", [automation_id]) if automation_id else ("", [])
        rows = self._read(
            f"SELECT status, count(*) FROM action_runs {where} GROUP BY status ORDER BY status",
            params,
        )
        return {str(status): int(n) for status, n in rows}

    # -- evaluator state --------------------------------------------------------------------

    @staticmethod
    def _save_state(cur: duckdb.DuckDBPyConnection, state: EvaluatorState, now: datetime) -> None:
        # Row 'evaluator': {"watermark": key, "state": core}; the watermark's received time
        # and id are repeated in their own columns for people reading the table.
        mark = state.watermark
        cur.execute(
            "INSERT OR REPLACE INTO automation_state (key, snapshot, watermark_received, "
            "watermark_id, updated) VALUES (?, ?, ?, TRY_CAST(? AS UUID), ?)",
            [
                STATE_KEY,
                automation_rows.state_snapshot(state),
                us_to_datetime(mark[0]) if mark else None,
                mark[2] if mark else None,
                now,
            ],
        )
        if state.seen is not None:
            cur.execute(
                "INSERT OR REPLACE INTO automation_state (key, snapshot, updated) VALUES (?, ?, ?)",
                [SEEN_KEY, state.seen.decode(), now],
            )

    def load_state(self) -> EvaluatorState | None:
        return automation_rows.evaluator_state(
            dict(
                self._read(
                    "SELECT key, snapshot FROM automation_state WHERE key IN (?, ?)",
                    [STATE_KEY, SEEN_KEY],
                )
            )
        )
