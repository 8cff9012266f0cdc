"""Automations on two collectors sharing a lake (in-process servers, a real PostgreSQL): the one
leader evaluates; an automation created, paused and resumed through the other collector takes
effect on the leader; a leader that stops hands over, and its successor continues from the
watermark — each matching event fires once."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.app import Herald
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.ids import uuid7_str
from collector.errors import ConfigError, InvalidInput
from collector.testing import (
    PostgresServer,
    WebhookReceiver,
    running_herald,
    test_config,
    wait_for,
    webhook_receiver,
)

SECRET = "cluster-webhook-secret-42"


def post(herald: Herald, n: int, name: str = "order.placed") -> list[str]:
    events: list[dict[str, Any]] = [
        {"event": name, "resource": {"prefect.resource.id": "shop"}, "id": uuid7_str()}
        for _ in range(n)
    ]
    reply = httpx.post(f"http://{herald.http_address}/api/events", json=events, timeout=10)
    assert reply.status_code == 204, reply.text
    return [e["id"] for e in events]


def called(hook: WebhookReceiver) -> list[str]:
    return [json.loads(r["body"])["event"] for r in list(hook.requests)]


def applied(leader: Herald) -> bool:
    """The leader's evaluator has taken the latest automation change."""
    role, shared = leader.leader, leader.cluster_state
    assert role is not None and shared is not None
    return role.applied_revision == shared.revision()


def the_leader(*servers: Herald) -> Herald | None:
    leaders = [s for s in servers if s.leads()]
    assert len(leaders) <= 1, "two leaders at once"
    return leaders[0] if leaders else None


def test_the_leader_takes_changes_made_elsewhere_and_hands_over_when_it_stops(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dbname = postgres.create_database()
    storage = {
        "backend": "ducklake",
        "catalog": postgres.catalog(dbname),
        "data_path": str(tmp_path / "lake"),
        "lake_follow_interval_seconds": 0.1,
    }

    def config(name: str) -> Any:
        return test_config(
            tmp_path / f"{name}.duckdb",
            storage=storage,
            automations={"evaluation_interval_seconds": 0.2},
            server={"drain_delay_seconds": 0},
        )

    with webhook_receiver() as hook, ExitStack() as second_stack:
        first_stack = ExitStack()
        with first_stack:
            a = first_stack.enter_context(running_herald(config("a")))
            b = second_stack.enter_context(running_herald(config("b")))
            leader = wait_for(lambda: the_leader(a, b), 15, "a leader")
            follower = b if leader is a else a
            with AutomationsClient(follower.grpc_address) as client:
                created = client.create(
                    {
                        "name": "placed",
                        "trigger": {"expect": ["order.placed"]},
                        "rate_limit": "off",
                        "actions": [
                            {
                                "type": "call-webhook",
                                "url": f"{hook.url}/placed",
                                "body": '{"event": "{{ event.id }}"}',
                                "headers": {"Authorization": f"Bearer {SECRET}"},
                            }
                        ],
                    }
                )
                aid = str(created["id"])
                # The secret is in the catalog database, out of the body; user SQL on a lake
                # cannot reach the catalog's tables.
                assert SECRET not in postgres.psql("SELECT body FROM herald.automations", dbname)
                with HeraldClient(follower.grpc_address) as reader:
                    for query in (
                        "SELECT * FROM __ducklake_metadata_lake.herald.automation_secrets",
                        "SELECT * FROM postgres_query('__herald_pg', "
                        "'SELECT value FROM herald.automation_secrets')",
                    ):
                        with pytest.raises(InvalidInput) as refused:
                            reader.sql(query)
                        assert SECRET not in str(refused.value)
                wait_for(lambda: applied(leader), 10, "the leader to take the new automation")
                sent = post(follower, 5) + post(leader, 5)
                wait_for(lambda: sorted(called(hook)) == sorted(sent), 15, "the webhooks")

                # Paused through the follower: the leader stops firing it.
                client.set_enabled(aid, False)
                wait_for(lambda: applied(leader), 10, "the leader to take the pause")
                paused = post(follower, 3)
                # Evaluated past them (the watermark), yet nothing fired.
                role = leader.leader
                assert role is not None and role.runtime is not None
                evaluation = role.runtime.evaluation
                ids = ", ".join(f"'{i}'" for i in paused)
                with HeraldClient(follower.grpc_address) as reader:
                    answer = reader.sql(
                        f"SELECT max(epoch_us(received)) FROM events WHERE id IN ({ids})"
                    )
                received = int(answer.table.column(0)[0].as_py())
                # Evaluation times rise in commit order and are never below `received`.
                wait_for(
                    lambda: (
                        evaluation.watermark is not None and evaluation.watermark[0] >= received
                    ),
                    10,
                    "the leader to evaluate the events sent while paused",
                )
                client.set_enabled(aid, True)
                wait_for(lambda: applied(leader), 10, "the leader to take the resume")

            # The leader stops (SIGTERM's path): it steps down and the other takes over.
            stopped_term = leader.leader.term if leader.leader else None
        successor = wait_for(lambda: the_leader(follower), 15, "the other collector to lead")
        assert successor.leader is not None and stopped_term is not None
        assert successor.leader.term is not None and successor.leader.term > stopped_term
        after = post(successor, 4)
        wait_for(
            lambda: sorted(called(hook)) == sorted(sent + after), 15, "the successor's webhooks"
        )
        time.sleep(0.5)  # an absence: nothing more is called (the paused events, repeats)
        assert sorted(called(hook)) == sorted(sent + after)
        firings = postgres.psql(
            "SELECT triggering_event_id FROM herald.automation_firings", dbname
        ).split()
        assert sorted(firings) == sorted(sent + after)


def test_a_one_host_lake_evaluates_without_an_election(tmp_path: Path) -> None:
    """A duckdb: catalog (one collector, no PostgreSQL): no leader election, the
    automation tables in storage.path, events read from the lake."""
    storage = {
        "backend": "ducklake",
        "catalog": f"duckdb:{tmp_path / 'lake.ducklake'}",
        "data_path": str(tmp_path / "lake"),
        "lake_follow_interval_seconds": 0.1,
    }
    config = test_config(
        tmp_path / "automations.duckdb",
        storage=storage,
        automations={"evaluation_interval_seconds": 0.2},
        server={"drain_delay_seconds": 0},
    )
    with webhook_receiver() as hook, running_herald(config) as herald:
        assert herald.election is None and herald.leads()
        with AutomationsClient(herald.grpc_address) as client:
            client.create(
                {
                    "name": "placed",
                    "trigger": {"expect": ["order.placed"]},
                    "rate_limit": "off",
                    "actions": [
                        {
                            "type": "call-webhook",
                            "url": f"{hook.url}/placed",
                            "body": '{"event": "{{ event.id }}"}',
                        }
                    ],
                }
            )
        sent = post(herald, 3)
        wait_for(lambda: sorted(called(hook)) == sorted(sent), 15, "the webhooks")
        assert (tmp_path / "automations.duckdb").exists()


def test_automations_on_a_sqlite_lake_are_refused_with_the_way_out(tmp_path: Path) -> None:
    storage = {
        "backend": "ducklake",
        "catalog": f"sqlite:{tmp_path / 'lake.sqlite'}",
        "data_path": str(tmp_path / "lake"),
    }
    with pytest.raises(ConfigError, match=r"automations\.enabled = false"):
        with running_herald(test_config(tmp_path / "a.duckdb", storage=storage)):
            pass
    off = test_config(tmp_path / "a.duckdb", storage=storage, automations={"enabled": False})
    with running_herald(off) as herald:
        post(herald, 1, "app.started")


def test_with_automations_off_one_collector_still_leads_the_upkeep(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    storage = {
        "backend": "ducklake",
        "catalog": postgres.catalog(postgres.create_database()),
        "data_path": str(tmp_path / "lake"),
    }
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_herald(
                    test_config(
                        tmp_path / f"{name}.duckdb",
                        storage=storage,
                        automations={"enabled": False},
                    )
                )
            )
            for name in "ab"
        ]
        leader = wait_for(lambda: the_leader(*servers), 15, "a leader for the upkeep")
        time.sleep(0.5)  # candidates keep trying: still one
        assert the_leader(*servers) is leader
        assert leader.leader is not None and leader.leader.runtime is None  # nothing evaluates
        assert all(s.readiness()["evaluator"] is None for s in servers)
