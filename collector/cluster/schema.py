"""The ``herald`` schema in the PostgreSQL catalog database: the automations state of a cluster
(SPEC §7's ``automations``, ``automation_firings``, ``action_runs``, ``automation_state``, plus
the secrets vault) and the leadership row whose ``term`` fences a deposed leader's writes.

DuckLake keeps its own ``ducklake_*`` tables in the same database (``public`` schema); nothing
here touches them. Created idempotently by whoever connects first; concurrent creators are
serialised by a transaction-level advisory lock (``CREATE TABLE IF NOT EXISTS`` alone races in
PostgreSQL: two creators can both pass the check and one fails on the catalog's unique index).
"""

from __future__ import annotations

SCHEMA = "herald"
# pg_advisory_xact_lock key while the schema is created ('HRLDSCHM'); the leader's lock is
# another key (leadership.LOCK_KEY).
SCHEMA_LOCK_KEY = 0x48524C44_5343484D

STATEMENTS: tuple[str, ...] = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.automations (
        id UUID PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        enabled BOOLEAN NOT NULL,
        tags TEXT[] NOT NULL DEFAULT '{{}}',
        body TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL,
        updated TIMESTAMPTZ NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.automation_firings (
        id UUID PRIMARY KEY,
        automation_id UUID NOT NULL,
        kind TEXT NOT NULL,
        occurred TIMESTAMPTZ NOT NULL,
        trigger_path TEXT NOT NULL,
        bucket_key TEXT NOT NULL,
        triggering_event_id UUID,
        event_id UUID NOT NULL,
        announced BOOLEAN NOT NULL DEFAULT false,
        body TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS firings_by_occurred ON {SCHEMA}.automation_firings "
    "(occurred DESC, created DESC)",
    f"CREATE INDEX IF NOT EXISTS firings_unannounced ON {SCHEMA}.automation_firings (created) "
    "WHERE NOT announced",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.action_runs (
        id UUID PRIMARY KEY,
        firing_id UUID NOT NULL,
        automation_id UUID NOT NULL,
        action_list TEXT NOT NULL,
        action_index INTEGER NOT NULL,
        action_type TEXT NOT NULL,
        phase TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL DEFAULT '{{}}',
        response_status INTEGER,
        created TIMESTAMPTZ NOT NULL,
        started TIMESTAMPTZ,
        finished TIMESTAMPTZ)""",
    f"CREATE INDEX IF NOT EXISTS runs_by_firing ON {SCHEMA}.action_runs (firing_id)",
    f"CREATE INDEX IF NOT EXISTS runs_triggered ON {SCHEMA}.action_runs (firing_id) "
    "WHERE status = 'triggered'",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.automation_state (
        key TEXT PRIMARY KEY,
        snapshot TEXT NOT NULL,
        watermark_received TIMESTAMPTZ,
        watermark_id UUID,
        updated TIMESTAMPTZ NOT NULL)""",
    # The real values of secrets written into automations (``automations.body`` holds markers).
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.automation_secrets (
        ref TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    # One row: the current leader's term (raised by each newly elected leader) and who it is;
    # ``automations_revision`` rises with every automation write, so the leader notices changes
    # made through another collector.
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.leadership (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        term BIGINT NOT NULL DEFAULT 0,
        holder TEXT NOT NULL DEFAULT '',
        since TIMESTAMPTZ,
        automations_revision BIGINT NOT NULL DEFAULT 0)""",
    f"INSERT INTO {SCHEMA}.leadership (id) VALUES (1) ON CONFLICT (id) DO NOTHING",
)
