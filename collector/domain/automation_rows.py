"""The automations records from their stored columns, and back: what every automations state
backend (the DuckDB store, the cluster's PostgreSQL) reads and writes the same way.

Each backend keeps its own SQL; it selects the columns named here (``RUN_COLUMNS``,
``AUTOMATION_COLUMNS``, ``FIRING_COLUMNS``) in this order and hands the rows to these
functions, so an action run, a history entry or the evaluator state reads alike from either
store. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload
from uuid import UUID

import orjson

from collector.domain.automation_records import (
    ActionRun,
    EvaluatorState,
    EventKey,
    Firing,
    Unfinished,
)
from collector.domain.automations import Automation
from collector.domain.events import format_time
from collector.errors import Conflict

# automation_state keys: the evaluator's snapshot with its watermark, and its seen-ids.
STATE_KEY = "evaluator"
SEEN_KEY = "evaluator.seen"

AUTOMATION_COLUMNS = "body, created, updated"
RUN_COLUMNS = (
    "id, firing_id, automation_id, action_list, action_index, action_type, phase, status, "
    "reason, detail, response_status, created, started, finished"
)
FIRING_COLUMNS = (
    "id, automation_id, kind, occurred, trigger_path, bucket_key, triggering_event_id, "
    "event_id, announced, body, created"
)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    # The drivers hand back datetimes in the session's zone (DuckDB's pytz-aware ones);
    # records carry the stdlib's UTC.
    return value.astimezone(UTC) if value is not None else None


def action_run(row: Sequence[Any]) -> ActionRun:
    """An ``action_runs`` row (``RUN_COLUMNS``) as its record."""
    (id_, firing_id, automation_id, action_list, index, kind, phase, status, reason, detail,
     response_status, created, started, finished) = row  # fmt: skip
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
        created=utc(created),
        started=utc(started),
        finished=utc(finished),
    )


def runs_by_firing(rows: Iterable[Sequence[Any]]) -> dict[UUID, list[ActionRun]]:
    """``action_runs`` rows (``RUN_COLUMNS``) grouped by their firing, in row order."""
    runs: dict[UUID, list[ActionRun]] = {}
    for row in rows:
        run = action_run(row)
        runs.setdefault(run.firing_id, []).append(run)
    return runs


def unfinished(
    rows: Iterable[Sequence[Any]], runs: Mapping[UUID, list[ActionRun]]
) -> list[Unfinished]:
    """Firing rows (id, body, event_id, announced) with their still-``triggered`` runs."""
    return [
        Unfinished(Firing.from_dict(orjson.loads(body)), event_id, announced, runs.get(fid, []))
        for fid, body, event_id, announced in rows
    ]


def history(
    rows: Iterable[Sequence[Any]], runs: Mapping[UUID, list[ActionRun]]
) -> list[dict[str, Any]]:
    """Firing rows (``FIRING_COLUMNS``) with their action runs: the automation history's
    JSON-able entries."""
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
                "action_runs": [run.to_dict() for run in runs.get(fid, [])],
            }
        )
    return out


def run_outcomes(runs: Sequence[ActionRun]) -> dict[str, list[Any]]:
    """The outcome columns of action runs, column by column (for batched inserts and
    updates): status, reason, detail (JSON text), response_status, started, finished."""
    return {
        "status": [r.status for r in runs],
        "reason": [r.reason for r in runs],
        "detail": [orjson.dumps(r.detail, default=str).decode() for r in runs],
        "response_status": [r.response_status for r in runs],
        "started": [r.started for r in runs],
        "finished": [r.finished for r in runs],
    }


def automation_values(a: Automation, public: dict[str, Any]) -> list[Any]:
    """The ``automations`` columns name, description, enabled, tags, body (the public form)."""
    return [a.name, a.description, a.enabled, list(a.tags), orjson.dumps(public).decode()]


def id_taken(automation_id: UUID) -> Conflict:
    """The error for an automation inserted with an id already stored."""
    return Conflict(
        f"an automation with id {automation_id} already exists; update it "
        f"with `herald automations update --id {automation_id}`, or leave "
        "`id` out to create a copy"
    )


def state_snapshot(state: EvaluatorState) -> str:
    """The ``evaluator`` row's snapshot: ``{"watermark": key, "state": core}``."""
    mark = state.watermark
    body = (
        b'{"watermark":'
        + orjson.dumps(list(mark) if mark else None)
        + b',"state":'
        + state.core
        + b"}"
    )
    return body.decode()


def evaluator_state(snapshots: Mapping[str, str]) -> EvaluatorState | None:
    """The evaluator state from the ``automation_state`` snapshots by key, or None."""
    if STATE_KEY not in snapshots:
        return None
    body = orjson.loads(snapshots[STATE_KEY])
    mark = body.get("watermark")
    seen = snapshots.get(SEEN_KEY)
    watermark: EventKey | None = (int(mark[0]), int(mark[1]), str(mark[2])) if mark else None
    return EvaluatorState(orjson.dumps(body["state"]), watermark, seen.encode() if seen else None)
