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
from datetime import UTC, datetime
from typing import Any, overload
from uuid import UUID

import duckdb
import orjson
import pyarrow as pa

from collector.domain.automation_records import (
    ActionRun,
    EvaluatorState,
    Firing,
    NewFiring,
    StoredAutomation,
    Unfinished,
)
from collector.domain.automation_state import AutomationStateStore
from collector.domain.automations import Automation, parse_automation
from collector.domain.events import format_time, us_to_datetime
from collector.domain.secret_markers import refs_in, resolve, split
from collector.errors import Conflict, NotFound, StoreError
from collector.store.automation_events import AutomationEventReads
from collector.store.duckdb_store import EventStore
from collector.store.secret_vault import SecretVault

STATE_KEY = "evaluator"
SEEN_KEY = "evaluator.seen"
_dumps = orjson.dumps


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # DuckDB hands back pytz-aware datetimes; normalise to the stdlib's UTC.
    return value.astimezone(UTC) if value is not None else None


_AUTOMATION_COLUMNS = "body, created, updated"
_RUN_COLUMNS = (
    "id, firing_id, automation_id, action_list, action_index, action_type, phase, status, "
    "reason, detail, response_status, created, started, finished"
)


def _run(row: tuple[Any, ...]) -> ActionRun:
    (
        id_,
        firing_id,
        automation_id,
        action_list,
        index,
        kind,
        phase,
        status,
        reason,
        detail,
        response_status,
        created,
        started,
        finished,
    ) = row
    return ActionRun(
        id=id_,
        firing_id=firing_id,
        automation_id=automation_id,
        action_list=action_list,
        action_index=index,
        action_type=kind,
        phase=phase,
        status=status,
        reason=reason,
        detail=orjson.loads(detail) if detail else {},
        response_status=response_status,
        created=_utc(created),
        started=_utc(started),
        finished=_utc(finished),
    )


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
        return StoredAutomation(parse_automation(real), _utc(created), _utc(updated), public)

    def list_automations(self) -> list[StoredAutomation]:
        """Every automation, by name then creation (Prefect's default sort is NAME_ASC)."""
        rows = self._read(f"SELECT {_AUTOMATION_COLUMNS} FROM automations ORDER BY name, created")
        return [self._automation(r) for r in rows]

    def get_automation(self, automation_id: UUID) -> StoredAutomation | None:
        rows = self._read(
            f"SELECT {_AUTOMATION_COLUMNS} FROM automations WHERE id = ?", [automation_id]
        )
        return self._automation(rows[0]) if rows else None

    def find_by_name(self, name: str) -> list[StoredAutomation]:
        rows = self._read(
            f"SELECT {_AUTOMATION_COLUMNS} FROM automations WHERE name = ? ORDER BY created",
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

    @staticmethod
    def _values(a: Automation, public: dict[str, Any]) -> list[Any]:
        return [a.name, a.description, a.enabled, list(a.tags), _dumps(public).decode()]

    def insert_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        """Store a new automation; ``Conflict`` if its id is taken."""
        with self._writes:
            automation, public = self._prepare(automation, None)
            with self._store.transaction() as cur:
                taken = cur.execute(
                    "SELECT 1 FROM automations WHERE id = ?", [automation.id]
                ).fetchone()
                if taken:
                    raise Conflict(
                        f"an automation with id {automation.id} already exists; update it "
                        f"with `herald automations update --id {automation.id}`, or leave "
                        "`id` out to create a copy"
                    )
                cur.execute(
                    "INSERT INTO automations (id, name, description, enabled, tags, body, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [automation.id, *self._values(automation, public), now, now],
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
                    [*self._values(automation, public), now, automation.id],
                )
            self._forget_unused_secrets()
        return StoredAutomation(automation, _utc(row[0]), now, public)

    def delete_automation(self, automation_id: UUID) -> StoredAutomation:
        """Delete an automation (its firings and action runs stay, as history; its secrets
        go)."""
        with self._writes:
            with self._store.transaction() as cur:
                row = cur.execute(
                    f"SELECT {_AUTOMATION_COLUMNS} FROM automations WHERE id = ?",
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
        stamp = pa.timestamp("us", tz="UTC")
        firings = [item.firing for item in items]
        table = pa.table(
            {
                "id": [str(f.id) for f in firings],
                "automation_id": [str(f.automation_id) for f in firings],
                "kind": [f.kind for f in firings],
                "occurred": pa.array([f.occurred for f in firings], stamp),
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
        stamp = pa.timestamp("us", tz="UTC")
        table = pa.table(
            {
                "id": [str(r.id) for r in runs],
                "firing_id": [str(r.firing_id) for r in runs],
                "automation_id": [str(r.automation_id) for r in runs],
                "action_list": [r.action_list for r in runs],
                "action_index": pa.array([r.action_index for r in runs], pa.int32()),
                "action_type": [r.action_type for r in runs],
                "phase": [r.phase for r in runs],
                "status": [r.status for r in runs],
                "reason": pa.array([r.reason for r in runs], pa.string()),
                "detail": [_dumps(r.detail, default=str).decode() for r in runs],
                "response_status": pa.array([r.response_status for r in runs], pa.int32()),
                "started": pa.array([r.started for r in runs], stamp),
                "finished": pa.array([r.finished for r in runs], stamp),
            }
        )
        cur.register("new_runs", table)
        try:
            cur.execute(
                f"INSERT OR IGNORE INTO action_runs ({_RUN_COLUMNS}) SELECT id::UUID, "
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
                stamp = pa.timestamp("us", tz="UTC")
                cur.register(
                    "run_updates",
                    pa.table(
                        {
                            "id": [str(r.id) for r in runs],
                            "status": [r.status for r in runs],
                            "reason": pa.array([r.reason for r in runs], pa.string()),
                            "detail": [_dumps(r.detail, default=str).decode() for r in runs],
                            "response_status": pa.array(
                                [r.response_status for r in runs], pa.int32()
                            ),
                            "started": pa.array([r.started for r in runs], stamp),
                            "finished": pa.array([r.finished for r in runs], stamp),
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
        runs: dict[UUID, list[ActionRun]] = {}
        for row in self._read(
            f"SELECT {_RUN_COLUMNS} FROM action_runs WHERE status = 'triggered' "
            "AND list_contains(?, firing_id) ORDER BY action_list, action_index",
            [[r[0] for r in rows]],
        ):
            run = _run(row)
            runs.setdefault(run.firing_id, []).append(run)
        return [
            Unfinished(Firing.from_dict(orjson.loads(body)), event_id, announced, runs.get(fid, []))
            for fid, body, event_id, announced in rows
        ]

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
            "SELECT id, automation_id, kind, occurred, trigger_path, bucket_key, "
            "triggering_event_id, event_id, announced, body, created "
            f"FROM automation_firings AS f {where} ORDER BY occurred DESC, created DESC LIMIT ?",
            [*params, limit],
        )
        if not rows:
            return []
        runs: dict[UUID, list[dict[str, Any]]] = {}
        for row in self._read(
            f"SELECT {_RUN_COLUMNS} FROM action_runs WHERE list_contains(?, firing_id) "
            "ORDER BY created, action_list, action_index",
            [[r[0] for r in rows]],
        ):
            run = _run(row)
            runs.setdefault(run.firing_id, []).append(run.to_dict())
        out = []
        for fid, aid, kind, occurred, path, key, trig, event_id, announced, body, created in rows:
            firing = orjson.loads(body)
            event = firing.get("triggering_event") or {}
            out.append(
                {
                    "id": str(fid),
                    "automation_id": str(aid),
                    "kind": kind,
                    "occurred": format_time(occurred),
                    "trigger_path": path,
                    "bucket_key": orjson.loads(key),
                    "triggering_labels": firing.get("triggering_labels", {}),
                    "triggering_event_id": str(trig) if trig else None,
                    "triggering_event_name": event.get("event"),
                    "resolves": firing.get("resolves"),
                    "event_id": str(event_id),
                    "announced": announced,
                    "created": format_time(created),
                    "action_runs": runs.get(fid, []),
                }
            )
        return out

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
        body = (
            b'{"watermark":'
            + _dumps(list(mark) if mark else None)
            + b',"state":'
            + state.core
            + b"}"
        )
        cur.execute(
            "INSERT OR REPLACE INTO automation_state (key, snapshot, watermark_received, "
            "watermark_id, updated) VALUES (?, ?, ?, TRY_CAST(? AS UUID), ?)",
            [
                STATE_KEY,
                body.decode(),
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
        rows = dict(
            self._read(
                "SELECT key, snapshot FROM automation_state WHERE key IN (?, ?)",
                [STATE_KEY, SEEN_KEY],
            )
        )
        if STATE_KEY not in rows:
            return None
        body = orjson.loads(rows[STATE_KEY])
        mark = body.get("watermark")
        seen = rows.get(SEEN_KEY)
        return EvaluatorState(
            _dumps(body["state"]),
            (int(mark[0]), int(mark[1]), str(mark[2])) if mark else None,
            seen.encode() if seen else None,
        )
