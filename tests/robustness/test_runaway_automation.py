"""A runaway automation — one that matches a hot event and fires for every one of them — can
be stopped: a pause or a delete answers at once under a backlog of thousands of waiting
webhooks, cancels them (recorded as ``cancelled`` in ``action_runs``), and no webhook arrives
after it beyond those already in flight. The action queue of an automation is bounded (the
overflow is recorded as ``skipped``), the rate limit holds (with a default for actions that
call out), ``herald automations history`` shows cancelled and skipped runs, and a restart
never resumes them.

Real server, real DuckDB file, a real (slow) webhook receiver on 127.0.0.1 port 0."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.automations.dispatch import MAX_CONCURRENT_ACTIONS_PER_AUTOMATION
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.automations import parse_automation
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore
from collector.testing import (
    WebhookReceiver,
    running_herald,
    test_config,
    wait_for,
    webhook_receiver,
)

HOT = "app.cache.miss"
# Generous: the lead runs the whole suite on two shared cores. Before the fix a pause under a
# backlog of ~4,000 webhooks took 22–27 s on this machine; now ~0.2 s.
PAUSE_ANSWER_SECONDS = 3.0
# How long a wait may take here: thousands of webhooks on two shared cores.
SLOW = 30.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """The webhook receiver; a test sets its ``delay`` so that a backlog builds up."""
    with webhook_receiver() as found:
        yield found


def server(db: Path, **automations: Any) -> Any:
    config = test_config(
        db,
        automations={"evaluation_interval_seconds": 0.1, **automations},
        server={"shutdown_grace_seconds": 1.0},
    )
    return running_herald(config)


def hot_events(n: int, name: str = HOT) -> list[dict[str, Any]]:
    now = format_time(datetime.now(UTC))
    return [
        {
            "event": name,
            "occurred": now,
            "resource": {"prefect.resource.id": f"app.cache.{i % 7}"},
            "id": uuid7_str(),
        }
        for i in range(n)
    ]


def emit(herald: Herald, events: list[dict[str, Any]]) -> None:
    with HeraldClient(herald.grpc_address) as client:
        for start in range(0, len(events), 500):
            accepted, errors = client.emit(events[start : start + 500])
            assert not errors and accepted == len(events[start : start + 500])


def webhook(url: str, name: str = "runaway", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"expect": [HOT]},
        "actions": [{"type": "call-webhook", "url": url, "retries": 0}],
        **extra,
    }


def counts(herald: Herald, automation_id: str) -> dict[str, int]:
    with AutomationsClient(herald.grpc_address) as client:
        found: dict[str, int] = client.history_page(automation_id, 1)["run_counts"]
        return found


def runs(herald: Herald, automation_id: str, status: str) -> list[dict[str, Any]]:
    with HeraldClient(herald.grpc_address) as client:
        table, _ = client.sql(
            "SELECT status, reason, started, finished FROM action_runs "
            f"WHERE automation_id = '{automation_id}' AND status = '{status}'"
        )
    rows: list[dict[str, Any]] = table.to_pylist()  # pyarrow has no hints
    return rows


def backlog(herald: Herald, receiver: WebhookReceiver, n: int) -> str:
    """An automation firing a slow webhook on each of ``n`` hot events: returns its id once
    thousands of runs wait behind the ones in flight."""
    with AutomationsClient(herald.grpc_address) as client:
        automation_id: str = client.create(webhook(f"{receiver.url}/hook", rate_limit="off"))["id"]
    emit(herald, hot_events(n))
    wait_for(
        lambda: counts(herald, automation_id).get("triggered", 0) >= n // 2,
        timeout=SLOW,
        what="a backlog of waiting runs",
    )
    wait_for(lambda: receiver.count() >= 1, timeout=SLOW, what="the first webhooks")
    return automation_id


def stop_and_check(
    herald: Herald,
    receiver: WebhookReceiver,
    automation_id: str,
    n: int,
    stop: Callable[[AutomationsClient], Any],
    reason: str,
) -> dict[str, int]:
    """Stop the runaway with ``stop``; check it answered at once, that the waiting runs were
    cancelled, and that no webhook arrived afterwards beyond those in flight."""
    with AutomationsClient(herald.grpc_address) as client:
        started = time.monotonic()
        stop(client)
        took = time.monotonic() - started
    answered = time.monotonic()
    assert took < PAUSE_ANSWER_SECONDS, f"the call took {took:.2f} s under a backlog"
    # Cancelled as the call answers: what waited is recorded, no run is left waiting except
    # the ones in flight, which finish their current request.
    now = counts(herald, automation_id)
    assert now.get("cancelled", 0) >= n // 4, now
    assert now.get("triggered", 0) <= MAX_CONCURRENT_ACTIONS_PER_AUTOMATION, now
    final: dict[str, int] = wait_for(
        lambda: c if (c := counts(herald, automation_id)).get("triggered", 0) == 0 else None,
        timeout=10,
        what="the runs in flight to finish",
    )
    assert receiver.since(answered) <= MAX_CONCURRENT_ACTIONS_PER_AUTOMATION
    settled = receiver.count()
    time.sleep(1.0)  # an absence: nothing more may come, however long one waits
    assert receiver.count() == settled, "webhooks kept arriving after the automation stopped"
    # Every firing is accounted for, and only runs that were sent are `executed`.
    assert sum(final.values()) == n, final
    assert final.get("executed", 0) == receiver.count("/hook")
    cancelled = runs(herald, automation_id, "cancelled")
    assert {r["reason"] for r in cancelled} == {reason}
    assert all(r["started"] is None and r["finished"] is not None for r in cancelled)
    return final


def test_pause_answers_at_once_under_a_backlog_and_cancels_what_waits(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.delay = 0.5
    n = 3000
    with server(tmp_path / "h.duckdb", max_queued_actions=5000) as herald:
        automation_id = backlog(herald, receiver, n)
        stop_and_check(
            herald,
            receiver,
            automation_id,
            n,
            lambda c: c.set_enabled(automation_id, False),
            "the automation was paused",
        )
        # Resuming does not bring the cancelled runs back.
        sent = receiver.count()
        with AutomationsClient(herald.grpc_address) as client:
            client.set_enabled(automation_id, True)
        time.sleep(0.5)
        assert receiver.count() == sent
        assert counts(herald, automation_id).get("triggered", 0) == 0


def test_delete_answers_at_once_under_a_backlog_and_cancels_what_waits(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.delay = 0.5
    n = 2000
    with server(tmp_path / "h.duckdb", max_queued_actions=5000) as herald:
        automation_id = backlog(herald, receiver, n)
        stop_and_check(
            herald,
            receiver,
            automation_id,
            n,
            lambda c: c.delete(automation_id),
            "the automation was deleted",
        )
        # Hot events keep coming: a deleted automation neither fires nor acts.
        sent = receiver.count()
        emit(herald, hot_events(200))
        time.sleep(0.5)
        assert receiver.count() == sent
        assert sum(counts(herald, automation_id).values()) == n


def test_a_full_action_queue_skips_the_overflow_and_memory_stays_bounded(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.delay = 0.1
    n, queue = 1000, 50
    with server(tmp_path / "h.duckdb", max_queued_actions=queue) as herald:
        with AutomationsClient(herald.grpc_address) as client:
            automation_id = client.create(webhook(f"{receiver.url}/hook", rate_limit="off"))["id"]
        runtime = herald.automations
        assert runtime is not None
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                waiting = runtime.dispatcher.waiting(UUID(automation_id))
                peak = max(peak, waiting)
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            emit(herald, hot_events(n))
            final = wait_for(
                lambda: (
                    c
                    if (c := counts(herald, automation_id)).get("triggered", 0) == 0
                    and sum(c.values()) == n
                    else None
                ),
                timeout=SLOW,
                what="every firing's runs to end",
            )
        finally:
            stop.set()
            sampler.join()
        # The queue never held more than its bound; what did not fit is recorded, not lost.
        assert peak <= queue
        assert final.get("skipped", 0) >= n - queue - 10 * MAX_CONCURRENT_ACTIONS_PER_AUTOMATION
        assert final.get("executed", 0) + final.get("skipped", 0) == n, final
        assert final["executed"] == receiver.count("/hook")
        skipped = runs(herald, automation_id, "skipped")
        assert {r["reason"] for r in skipped} == {
            f"the automation's action queue is full ({queue} runs waiting; "
            f"automations.max_queued_actions = {queue})"
        }
        with AutomationsClient(herald.grpc_address) as client:
            assert len(client.history(automation_id, 1000)) == min(n, 1000)


def test_rate_limits_hold_and_the_default_applies_to_actions_that_call_out(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    n = 40
    with server(
        tmp_path / "h.duckdb", rate_limit_max_firings=3, rate_limit_within_seconds=600
    ) as herald:
        with AutomationsClient(herald.grpc_address) as client:
            ids = {
                # No rate_limit of its own, calls out: the server's default (3 per 600 s).
                "default": client.create(webhook(f"{receiver.url}/default", "default"))["id"],
                "own": client.create(
                    webhook(
                        f"{receiver.url}/own",
                        "own",
                        rate_limit={"max_firings": 5, "within": "PT10M"},
                    )
                )["id"],
                "off": client.create(webhook(f"{receiver.url}/off", "off", rate_limit="off"))["id"],
                # Calls nothing outside: no default limit.
                "quiet": client.create(
                    {
                        "name": "quiet",
                        "trigger": {"expect": [HOT]},
                        "actions": [{"type": "do-nothing"}],
                    }
                )["id"],
            }
            assert client.read(ids["own"])["rate_limit"] == {"max_firings": 5, "within": 600.0}
            assert "rate_limit" not in client.read(ids["default"])  # Prefect's shape as is
        emit(herald, hot_events(n))

        def settled() -> dict[str, dict[str, int]]:
            found = {name: counts(herald, i) for name, i in ids.items()}
            done = all(sum(c.values()) == n and not c.get("triggered") for c in found.values())
            return found if done else {}

        found = wait_for(settled, timeout=SLOW, what="every run to end")
        assert found["default"] == {"executed": 3, "skipped": n - 3}
        assert found["own"] == {"executed": 5, "skipped": n - 5}
        assert found["off"] == {"executed": n}
        assert found["quiet"] == {"executed": n}
        assert (receiver.count("/default"), receiver.count("/own"), receiver.count("/off")) == (
            3,
            5,
            n,
        )
        reasons = {r["reason"] for r in runs(herald, ids["default"], "skipped")}
        assert reasons == {"rate limit: at most 3 firings per 600 s run their actions"}
        # The skipped firings are still firings: announced and in the history.
        with HeraldClient(herald.grpc_address) as reader:
            table, _ = reader.sql(
                "SELECT count(*) AS n FROM events WHERE event = 'herald.automation.triggered' "
                f"AND resource_id = 'herald.automation.{ids['default']}'"
            )
        assert table.to_pylist() == [{"n": n}]


def test_history_cli_shows_cancelled_and_skipped_runs(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.delay = 0.3
    with server(tmp_path / "h.duckdb", max_queued_actions=100) as herald:
        with AutomationsClient(herald.grpc_address) as client:
            automation_id = client.create(webhook(f"{receiver.url}/hook", rate_limit="off"))["id"]
        emit(herald, hot_events(400))
        wait_for(
            lambda: counts(herald, automation_id).get("skipped", 0) >= 100,
            timeout=SLOW,
            what="skipped runs",
        )
        with AutomationsClient(herald.grpc_address) as client:
            client.set_enabled(automation_id, False)
        wait_for(
            lambda: not counts(herald, automation_id).get("triggered"),
            timeout=SLOW,
            what="runs to end",
        )
        final = counts(herald, automation_id)

        def cli(*args: str) -> Any:
            result = CliRunner().invoke(
                app,
                ["--address", herald.grpc_address, "automations", "history", *args],
                env={"COLUMNS": "400"},  # a table wide enough that no cell wraps
            )
            assert result.exit_code == 0, result.output
            return result

        table = cli("runaway", "--limit", "400", "--format", "table")
        assert "call-webhook: cancelled — the automation was paused" in table.stdout
        assert "call-webhook: skipped — the automation's action queue is full" in table.stdout
        summary = ", ".join(f"{n:,} {status}" for status, n in sorted(final.items()))
        assert f"Action runs: {summary}" in table.stderr

        cancelled = json.loads(cli("runaway", "--status", "cancelled", "--format", "json").stdout)
        assert cancelled and all(
            any(r["status"] == "cancelled" for r in f["action_runs"]) for f in cancelled
        )
        skipped = json.loads(cli("--status", "skipped", "--format", "json", "-n", "1000").stdout)
        assert len(skipped) == final["skipped"]

        bad = CliRunner().invoke(
            app,
            ["--address", herald.grpc_address, "automations", "history", "--status", "lost"],
        )
        assert bad.exit_code == 1
        assert "status: must be one of" in bad.output


def test_a_restart_resumes_no_cancelled_or_skipped_run(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    db = tmp_path / "h.duckdb"
    receiver.delay = 0.4
    n = 600
    with server(db, max_queued_actions=300) as herald:
        with AutomationsClient(herald.grpc_address) as client:
            paused_id = client.create(
                webhook(f"{receiver.url}/paused", "paused", rate_limit="off")
            )["id"]
            limited_id = client.create(
                webhook(f"{receiver.url}/limited", "limited", rate_limit={"max_firings": 2})
            )["id"]
            left_id = client.create(
                webhook(
                    f"{receiver.url}/left",
                    "left",
                    rate_limit="off",
                    trigger={"expect": ["app.left"]},
                )
            )["id"]
        emit(herald, hot_events(n))
        emit(herald, hot_events(200, "app.left"))
        wait_for(
            lambda: (
                counts(herald, paused_id).get("triggered", 0) >= 100
                and counts(herald, left_id).get("triggered", 0) >= 100
                and sum(counts(herald, limited_id).values()) == n
            ),
            timeout=SLOW,
            what="backlogs",
        )
        with AutomationsClient(herald.grpc_address) as client:
            client.set_enabled(paused_id, False)
        wait_for(
            lambda: not counts(herald, paused_id).get("triggered"),
            timeout=SLOW,
            what="in-flight runs",
        )
        before = {i: counts(herald, i) for i in (paused_id, limited_id)}
        # Stopped with `left`'s backlog still waiting: those runs stay `triggered`.
    left_waiting = counts_offline(db, left_id).get("triggered", 0)
    assert left_waiting >= 50
    # While the server is down, `left` is paused too (as an admin could, in the file).
    store = EventStore(str(db))
    try:
        automations = AutomationStore(store)
        stored = automations.get_automation(UUID(left_id))
        assert stored is not None
        paused = parse_automation({**stored.automation.model_dump(mode="json"), "enabled": False})
        automations.replace_automation(paused, datetime.now(UTC))
    finally:
        store.close()

    sent = {path: receiver.count(path) for path in ("/paused", "/limited", "/left")}
    with server(db, max_queued_actions=300) as herald:
        # Resume the paused automation: its cancelled runs stay cancelled.
        with AutomationsClient(herald.grpc_address) as client:
            client.set_enabled(paused_id, True)
        after_left = wait_for(
            lambda: c if (c := counts(herald, left_id)) and not c.get("triggered") else None,
            timeout=SLOW,
            what="the left-over runs to be settled",
        )
        time.sleep(1.0)  # an absence: nothing that was cancelled or skipped is sent again
        assert {path: receiver.count(path) for path in sent} == sent
        assert {i: counts(herald, i) for i in before} == before
        assert after_left.get("cancelled", 0) >= left_waiting
        assert {r["reason"] for r in runs(herald, left_id, "cancelled")} == {
            "the automation was paused"
        }


def counts_offline(db: Path, automation_id: str) -> dict[str, int]:
    store = EventStore(str(db))
    try:
        return AutomationStore(store).run_counts(UUID(automation_id))
    finally:
        store.close()
