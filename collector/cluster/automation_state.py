"""``PgAutomationState``: the automations state of a cluster in its PostgreSQL catalog database
(``herald`` schema, ``schema.py``) — the ``AutomationStateStore`` of the DuckLake backend.

Every collector serves ``herald automations …`` from these tables, so a change made through any
of them is everyone's; the leader evaluates and records firings here. The event reads
(replay, leader lookups, backtests) are not PostgreSQL's: they come from the lake, through the
``AutomationEventSource`` this store is composed with.

* **Exactly once across a failover.** Firing ids and action-run ids are derived from what caused
  them, so a firing re-derived by the next leader (it replays from the stored watermark) is
  ``ON CONFLICT DO NOTHING``: stored — and acted on — once.
* **Fencing.** ``fenced(term)`` is the view the leader evaluates with: its ``record`` and
  ``update_runs`` first take a share lock on the leadership row and check the term is still
  theirs. A newly elected leader raises the term (``leadership.py``), so a deposed leader that
  has not noticed yet writes nothing (``LeadershipLost``) over its successor's state.
* **Secrets.** ``automations.body`` holds the public form with markers; the values are in
  ``automation_secrets`` (written in the same transaction as the automation that needs them).
  Every read puts them back, as the single-file store does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg

from collector.cluster.connections import PgConnections
from collector.cluster.schema import SCHEMA
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
from collector.domain.automation_state import (
    AutomationEventSource,
    AutomationStateStore,
    ForwardedEventSource,
)
from collector.domain.automations import Automation, parse_automation
from collector.domain.events import us_to_datetime
from collector.domain.secret_markers import refs_in, resolve, split
from collector.errors import NotFound, StoreError

_dumps = orjson.dumps
S = SCHEMA


class LeadershipLost(StoreError):
    """A write of the automations leader refused: another collector leads now."""


class PgAutomationState(ForwardedEventSource, AutomationStateStore):
    """The automations tables in PostgreSQL, with the lake's event reads (``events``)."""

    def __init__(
        self, connections: PgConnections, events: AutomationEventSource, *, term: int | None = None
    ) -> None:
        self._db = connections
        self._events = events
        self._term = term

    def fenced(self, term: int) -> PgAutomationState:
        """The same store, its evaluation writes valid only while ``term`` is the leader's."""
        return PgAutomationState(self._db, self._events, term=term)

    def revision(self) -> int:
        """Rises with every automation write on any collector (the leader reloads on a change)."""
        with self._db.transaction("reading the automations revision") as cur:
            row = cur.execute(f"SELECT automations_revision FROM {S}.leadership").fetchone()
        return int(row[0]) if row else 0

    def leader(self) -> tuple[int, str]:
        """The current (or last) leader's term and holder."""
        with self._db.transaction("reading the leadership") as cur:
            row = cur.execute(f"SELECT term, holder FROM {S}.leadership").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, "")

    def close(self) -> None:
        self._db.close()

    def _check_term(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        if self._term is None:
            return
        # FOR SHARE: a successor's term update waits for this transaction, and after it this
        # check fails — no write of ours lands after theirs.
        row = cur.execute(f"SELECT term FROM {S}.leadership WHERE id = 1 FOR SHARE").fetchone()
        if row is None or int(row[0]) != self._term:
            raise LeadershipLost(
                f"this collector no longer leads the automations (term {self._term}, now "
                f"{row[0] if row else '?'}): nothing recorded"
            )

    # -- automations ------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = (), what: str = "a read") -> list[Any]:
        with self._db.transaction(what) as cur:
            return cur.execute(sql, list(params)).fetchall()

    def _vault(self, cur: psycopg.Cursor[tuple[Any, ...]], refs: set[str]) -> dict[str, str]:
        if not refs:
            return {}
        rows = cur.execute(
            f"SELECT ref, value FROM {S}.automation_secrets WHERE ref = ANY(%s)", [sorted(refs)]
        ).fetchall()
        return {str(r): str(v) for r, v in rows}

    def _automations(
        self, cur: psycopg.Cursor[tuple[Any, ...]], rows: list[tuple[Any, ...]]
    ) -> list[StoredAutomation]:
        publics = [orjson.loads(body) for body, _, _ in rows]
        refs: set[str] = set()
        for public in publics:
            refs |= refs_in(public)
        vault = self._vault(cur, refs)
        return [
            StoredAutomation(
                parse_automation(resolve(public, vault)), utc(created), utc(updated), public
            )
            for public, (_, created, updated) in zip(publics, rows, strict=True)
        ]

    def _select(self, where: str, params: Sequence[Any], what: str) -> list[StoredAutomation]:
        with self._db.transaction(what) as cur:
            rows = cur.execute(
                f"SELECT {AUTOMATION_COLUMNS} FROM {S}.automations {where}",
                list(params),
            ).fetchall()
            return self._automations(cur, rows)

    def list_automations(self) -> list[StoredAutomation]:
        return self._select("ORDER BY name, created", [], "listing automations")

    def get_automation(self, automation_id: UUID) -> StoredAutomation | None:
        found = self._select("WHERE id = %s", [automation_id], "reading an automation")
        return found[0] if found else None

    def find_by_name(self, name: str) -> list[StoredAutomation]:
        return self._select("WHERE name = %s ORDER BY created", [name], "finding an automation")

    def _prepare(
        self,
        cur: psycopg.Cursor[tuple[Any, ...]],
        automation: Automation,
        previous: dict[str, Any] | None,
    ) -> tuple[Automation, dict[str, Any]]:
        """The automation with real values (markers sent back resolved) and its public form;
        its secret values are written to the vault in this transaction."""
        body = automation.model_dump(mode="json")
        vault = self._vault(cur, refs_in(body) | (refs_in(previous) if previous else set()))
        real = resolve(body, vault, strict=True)
        reuse = {vault[r]: r for r in refs_in(previous) if r in vault} if previous else {}
        public, found = split(real, reuse)
        for ref, value in found.items():
            cur.execute(
                f"INSERT INTO {S}.automation_secrets (ref, value) VALUES (%s, %s) "
                "ON CONFLICT (ref) DO UPDATE SET value = excluded.value",
                [ref, value],
            )
        return (parse_automation(real) if real != body else automation), public

    @staticmethod
    def _forget_unused_secrets(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        refs: set[str] = set()
        for (body,) in cur.execute(f"SELECT body FROM {S}.automations").fetchall():
            refs |= refs_in(orjson.loads(body))
        cur.execute(f"DELETE FROM {S}.automation_secrets WHERE NOT (ref = ANY(%s))", [sorted(refs)])
        cur.execute(f"UPDATE {S}.leadership SET automations_revision = automations_revision + 1")

    def insert_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        with self._db.transaction("storing an automation") as cur:
            # One automation write at a time, cluster-wide (the vault changes with the table).
            cur.execute(f"SELECT 1 FROM {S}.leadership WHERE id = 1 FOR UPDATE")
            if cur.execute(
                f"SELECT 1 FROM {S}.automations WHERE id = %s", [automation.id]
            ).fetchone():
                raise automation_rows.id_taken(automation.id)
            automation, public = self._prepare(cur, automation, None)
            cur.execute(
                f"INSERT INTO {S}.automations (id, name, description, enabled, tags, body, "
                "created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [automation.id, *automation_values(automation, public), now, now],
            )
            self._forget_unused_secrets(cur)
        return StoredAutomation(automation, now, now, public)

    def replace_automation(self, automation: Automation, now: datetime) -> StoredAutomation:
        with self._db.transaction("updating an automation") as cur:
            cur.execute(f"SELECT 1 FROM {S}.leadership WHERE id = 1 FOR UPDATE")
            row = cur.execute(
                f"SELECT body, created FROM {S}.automations WHERE id = %s", [automation.id]
            ).fetchone()
            if row is None:
                raise NotFound(f"Automation with id '{automation.id}' not found.")
            automation, public = self._prepare(cur, automation, orjson.loads(row[0]))
            cur.execute(
                f"UPDATE {S}.automations SET name = %s, description = %s, enabled = %s, "
                "tags = %s, body = %s, updated = %s WHERE id = %s",
                [*automation_values(automation, public), now, automation.id],
            )
            self._forget_unused_secrets(cur)
        return StoredAutomation(automation, utc(row[1]), now, public)

    def delete_automation(self, automation_id: UUID) -> StoredAutomation:
        with self._db.transaction("deleting an automation") as cur:
            cur.execute(f"SELECT 1 FROM {S}.leadership WHERE id = 1 FOR UPDATE")
            row = cur.execute(
                f"SELECT {AUTOMATION_COLUMNS} FROM {S}.automations WHERE id = %s",
                [automation_id],
            ).fetchone()
            if row is None:
                raise NotFound(f"Automation with id '{automation_id}' not found.")
            (stored,) = self._automations(cur, [row])
            cur.execute(f"DELETE FROM {S}.automations WHERE id = %s", [automation_id])
            self._forget_unused_secrets(cur)
        return stored

    # -- firings and action runs ------------------------------------------------------------

    def record(
        self, firings: Iterable[NewFiring], state: EvaluatorState | None, now: datetime
    ) -> set[UUID]:
        """In one transaction (fenced by the leader's term): the firings that are new (by id)
        with their action runs, and the evaluator state. Rows go in as arrays, one statement
        per table (a runaway automation brings thousands of firings per step)."""
        items = list(firings)
        new: set[UUID] = set()
        with self._db.transaction("recording automation firings") as cur:
            self._check_term(cur)
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
        cur: psycopg.Cursor[tuple[Any, ...]], items: list[NewFiring], now: datetime
    ) -> set[UUID]:
        firings = [item.firing for item in items]
        rows = cur.execute(
            f"INSERT INTO {S}.automation_firings (id, automation_id, kind, occurred, "
            "trigger_path, bucket_key, triggering_event_id, event_id, announced, body, created) "
            "SELECT id, automation_id, kind, occurred, trigger_path, bucket_key, "
            "triggering_event_id, event_id, false, body, %s FROM unnest(%s::uuid[], "
            "%s::uuid[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::uuid[], "
            "%s::uuid[], %s::text[]) AS f(id, automation_id, kind, occurred, trigger_path, "
            "bucket_key, triggering_event_id, event_id, body) "
            # Ids already stored (re-derived after a restart or a failover) are not new.
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            [
                now,
                [f.id for f in firings],
                [f.automation_id for f in firings],
                [f.kind for f in firings],
                [f.occurred for f in firings],
                [f.trigger_path for f in firings],
                [_dumps(list(f.bucket_key)).decode() for f in firings],
                [
                    f.triggering_event.id if f.triggering_event is not None else None
                    for f in firings
                ],
                [item.event_id for item in items],
                [_dumps(f.to_dict()).decode() for f in firings],
            ],
        ).fetchall()
        return {row[0] for row in rows}

    @staticmethod
    def _insert_runs(
        cur: psycopg.Cursor[tuple[Any, ...]], runs: list[ActionRun], now: datetime
    ) -> None:
        for run in runs:  # a run decided at once (skipped, cancelled) is stored finished
            run.created = now
        cur.execute(
            f"INSERT INTO {S}.action_runs ({RUN_COLUMNS}) SELECT id, firing_id, automation_id, "
            "action_list, action_index, action_type, phase, status, reason, detail, "
            "response_status, %s, started, finished FROM unnest(%s::uuid[], %s::uuid[], "
            "%s::uuid[], %s::text[], %s::int[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[]) AS r(id, firing_id, "
            "automation_id, action_list, action_index, action_type, phase, status, reason, "
            "detail, response_status, started, finished) ON CONFLICT (id) DO NOTHING",
            [
                now,
                [r.id for r in runs],
                [r.firing_id for r in runs],
                [r.automation_id for r in runs],
                [r.action_list for r in runs],
                [r.action_index for r in runs],
                [r.action_type for r in runs],
                [r.phase for r in runs],
                *automation_rows.run_outcomes(runs).values(),
            ],
        )

    def update_runs(self, runs: Sequence[ActionRun], announced: Sequence[UUID] = ()) -> None:
        """In one transaction (fenced): the outcome of action runs, and firings announced."""
        with self._db.transaction("recording action runs") as cur:
            self._check_term(cur)
            if runs:
                cur.execute(
                    f"UPDATE {S}.action_runs AS r SET status = u.status, reason = u.reason, "
                    "detail = u.detail, response_status = u.response_status, "
                    "started = u.started, finished = u.finished FROM unnest(%s::uuid[], "
                    "%s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[], "
                    "%s::timestamptz[]) AS u(id, status, reason, detail, response_status, "
                    "started, finished) WHERE r.id = u.id",
                    [
                        [r.id for r in runs],
                        *automation_rows.run_outcomes(runs).values(),
                    ],
                )
            if announced:
                cur.execute(
                    f"UPDATE {S}.automation_firings SET announced = true WHERE id = ANY(%s)",
                    [list(announced)],
                )

    def unfinished(self) -> list[Unfinished]:
        """Firings not yet announced, or with action runs still ``triggered`` — the work a
        stopped (or deposed) leader left; oldest first."""
        with self._db.transaction("reading unfinished firings") as cur:
            rows = cur.execute(
                f"SELECT f.id, f.body, f.event_id, f.announced FROM {S}.automation_firings AS f "
                f"WHERE NOT f.announced OR EXISTS (SELECT 1 FROM {S}.action_runs AS r "
                "WHERE r.firing_id = f.id AND r.status = 'triggered') "
                "ORDER BY f.created, f.occurred"
            ).fetchall()
            if not rows:
                return []
            runs = automation_rows.runs_by_firing(
                cur.execute(
                    f"SELECT {RUN_COLUMNS} FROM {S}.action_runs WHERE status = 'triggered' "
                    "AND firing_id = ANY(%s) ORDER BY action_list, action_index",
                    [[r[0] for r in rows]],
                ).fetchall()
            )
        return automation_rows.unfinished(rows, runs)

    def history(
        self, automation_id: UUID | None, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        if automation_id:
            conditions.append("f.automation_id = %s")
            params.append(automation_id)
        if status:
            conditions.append(
                f"EXISTS (SELECT 1 FROM {S}.action_runs AS r WHERE r.firing_id = f.id "
                "AND r.status = %s)"
            )
            params.append(status)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._db.transaction("reading automation history") as cur:
            rows = cur.execute(
                f"SELECT {FIRING_COLUMNS} FROM {S}.automation_firings AS f {where} "
                "ORDER BY occurred DESC, created DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
            if not rows:
                return []
            runs = automation_rows.runs_by_firing(
                cur.execute(
                    f"SELECT {RUN_COLUMNS} FROM {S}.action_runs WHERE firing_id = ANY(%s) "
                    "ORDER BY created, action_list, action_index",
                    [[r[0] for r in rows]],
                ).fetchall()
            )
        return automation_rows.history(rows, runs)

    def run_counts(self, automation_id: UUID | None) -> dict[str, int]:
        where, params = ("WHERE automation_id = %s", [automation_id]) if automation_id else ("", [])
        rows = self._read(
            f"SELECT status, count(*) FROM {S}.action_runs {where} GROUP BY status ORDER BY status",
            params,
            "counting action runs",
        )
        return {str(status): int(n) for status, n in rows}

    # -- evaluator state --------------------------------------------------------------------

    @staticmethod
    def _save_state(
        cur: psycopg.Cursor[tuple[Any, ...]], state: EvaluatorState, now: datetime
    ) -> None:
        mark = state.watermark
        watermark_id: UUID | None = None
        if mark:
            try:
                watermark_id = UUID(mark[2])
            except ValueError:
                watermark_id = None
        cur.execute(
            f"INSERT INTO {S}.automation_state (key, snapshot, watermark_received, watermark_id, "
            "updated) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
            "snapshot = excluded.snapshot, watermark_received = excluded.watermark_received, "
            "watermark_id = excluded.watermark_id, updated = excluded.updated",
            [
                STATE_KEY,
                automation_rows.state_snapshot(state),
                us_to_datetime(mark[0]) if mark else None,
                watermark_id,
                now,
            ],
        )
        if state.seen is not None:
            cur.execute(
                f"INSERT INTO {S}.automation_state (key, snapshot, updated) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot, "
                "updated = excluded.updated",
                [SEEN_KEY, state.seen.decode(), now],
            )

    def load_state(self) -> EvaluatorState | None:
        return automation_rows.evaluator_state(
            dict(
                self._read(
                    f"SELECT key, snapshot FROM {S}.automation_state WHERE key IN (%s, %s)",
                    [STATE_KEY, SEEN_KEY],
                    "reading the automations state",
                )
            )
        )
