"""The automations state of a cluster in a real PostgreSQL (collector.cluster.automation_state):
automations with their secrets kept apart, firings and action runs stored once by id (what makes
a failover free of duplicates), the evaluator state, and the leader's fencing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from collector.cluster.automation_state import LeadershipLost, PgAutomationState
from collector.cluster.connections import PgConnections
from collector.cluster.schema import SCHEMA
from collector.domain.automation_records import ActionRun, EvaluatorState, Firing, NewFiring
from collector.domain.automations import Automation, parse_automation
from collector.errors import Conflict, NotFound
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore
from collector.testing import PostgresServer

SECRET = "s3cr3t-token-value"


@pytest.fixture
def state(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[PgAutomationState, str]]:
    """The PostgreSQL state store on a fresh database, its event reads from a real store."""
    dbname = postgres.create_database()
    events = EventStore(str(tmp_path / "events.duckdb"))
    store = PgAutomationState(PgConnections(postgres.dsn(dbname)), AutomationStore(events))
    try:
        yield store, dbname
    finally:
        store.close()
        events.close()


def hook(name: str = "deploy hook", enabled: bool = True, aid: UUID | None = None) -> Automation:
    return parse_automation(
        {
            **({"id": str(aid)} if aid else {}),
            "name": name,
            "enabled": enabled,
            "trigger": {"expect": ["app.deployed"]},
            "actions": [
                {
                    "type": "call-webhook",
                    "url": "http://127.0.0.1:9/hook",
                    "headers": {"Authorization": f"Bearer {SECRET}"},
                }
            ],
        }
    )


def test_automations_keep_their_secrets_out_of_the_table(
    state: tuple[PgAutomationState, str], postgres: PostgresServer
) -> None:
    store, dbname = state
    now = datetime.now(UTC)
    created = store.insert_automation(hook(), now)
    aid = created.automation.id
    # The row holds a marker; the vault the value; reads put it back.
    body = postgres.psql(f"SELECT body FROM {SCHEMA}.automations", dbname)
    assert SECRET not in body and "[secret:" in body
    assert SECRET in postgres.psql(f"SELECT value FROM {SCHEMA}.automation_secrets", dbname)
    read = store.get_automation(aid)
    assert read is not None
    assert read.automation.model_dump(mode="json")["actions"][0]["headers"]["Authorization"] == (
        f"Bearer {SECRET}"
    )
    assert SECRET not in str(read.to_dict())
    with pytest.raises(Conflict):
        store.insert_automation(read.automation, now)
    # A replace sending the public form back keeps the stored secret.
    public = read.to_dict()
    public["enabled"] = False
    replaced = store.replace_automation(parse_automation(public), now + timedelta(seconds=1))
    assert not replaced.automation.enabled
    assert replaced.automation.model_dump(mode="json")["actions"][0]["headers"][
        "Authorization"
    ] == (f"Bearer {SECRET}")
    assert [s.automation.id for s in store.find_by_name("deploy hook")] == [aid]
    assert [s.automation.id for s in store.list_automations()] == [aid]
    revision = store.revision()
    store.delete_automation(aid)
    assert store.revision() > revision  # the leader reloads on this
    assert store.get_automation(aid) is None
    with pytest.raises(NotFound):
        store.delete_automation(aid)
    # Its secret went with it.
    assert postgres.psql(f"SELECT count(*) FROM {SCHEMA}.automation_secrets", dbname).strip() == "0"


def firings(automation_id: UUID, n: int, now: datetime) -> list[NewFiring]:
    out = []
    for i in range(n):
        fid = uuid4()
        out.append(
            NewFiring(
                Firing(fid, automation_id, uuid4(), "trigger", "triggered", now, (f"k{i}",)),
                uuid4(),
                [ActionRun(uuid4(), fid, automation_id, "actions", 0, "call-webhook", "trigger")],
            )
        )
    return out


def test_a_firing_recorded_twice_is_new_once(state: tuple[PgAutomationState, str]) -> None:
    store, _ = state
    now = datetime.now(UTC)
    aid = uuid4()
    items = firings(aid, 50, now)
    mark = (1_700_000_000_000_000, 1_700_000_000_000_000, str(uuid4()))
    first = store.record(items[:30], EvaluatorState(b'{"v":1}', mark), now)
    assert first == {i.firing.id for i in items[:30]}
    # The next leader re-derives the last ten and derives twenty more: only those are new.
    second = store.record(items[20:], None, now)
    assert second == {i.firing.id for i in items[30:]}
    assert store.run_counts(aid) == {"triggered": 50}
    assert len(store.unfinished()) == 50  # none announced yet

    done = [item.runs[0] for item in items[:40]]
    for run in done:
        run.status, run.started, run.finished, run.response_status = "executed", now, now, 200
    store.update_runs(done, [item.firing.id for item in items])
    assert store.run_counts(aid) == {"executed": 40, "triggered": 10}
    left = store.unfinished()
    assert {u.firing.id for u in left} == {i.firing.id for i in items[40:]}
    assert all(u.announced and len(u.runs) == 1 for u in left)

    history = store.history(aid, 100)
    assert len(history) == 50 and all(len(h["action_runs"]) == 1 for h in history)
    assert len(store.history(aid, 100, "triggered")) == 10
    loaded = store.load_state()
    assert loaded is not None and loaded.watermark == mark and loaded.core == b'{"v":1}'


def test_a_deposed_leader_records_nothing(
    state: tuple[PgAutomationState, str], postgres: PostgresServer
) -> None:
    store, dbname = state
    now = datetime.now(UTC)
    store.revision()  # creates the schema
    postgres.psql(f"UPDATE {SCHEMA}.leadership SET term = 7", dbname)
    leader = store.fenced(7)
    items = firings(uuid4(), 3, now)
    assert leader.record(items[:1], None, now) == {items[0].firing.id}
    # A successor was elected (term 8): the old leader's writes are refused, whole.
    postgres.psql(f"UPDATE {SCHEMA}.leadership SET term = 8", dbname)
    with pytest.raises(LeadershipLost):
        leader.record(items[1:], EvaluatorState(b"{}", None), now)
    with pytest.raises(LeadershipLost):
        leader.update_runs(items[0].runs, [items[0].firing.id])
    assert store.fenced(8).record(items[1:], None, now) == {i.firing.id for i in items[1:]}
    assert store.load_state() is None
    assert store.run_counts(None) == {"triggered": 3}


def test_connections_cut_while_idle_are_replaced_not_failed(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dbname = postgres.create_database()
    events = EventStore(str(tmp_path / "events.duckdb"))
    connections = PgConnections(
        postgres.dsn(dbname), application_name="herald-idle-test", ping_after_idle_seconds=0
    )
    store = PgAutomationState(connections, AutomationStore(events))
    try:
        store.insert_automation(hook(), datetime.now(UTC))
        # PostgreSQL ends every session of the store (as a restart would).
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'herald-idle-test'",
            dbname,
        )
        assert [s.automation.name for s in store.list_automations()] == ["deploy hook"]
    finally:
        store.close()
        events.close()
