"""The automations API over gRPC and the `herald automations` CLI, against a real server: CRUD
and the events about it, validation errors that name the field, pause/resume, history,
backtests, and scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.errors import InvalidInput, NotFound, PermissionDenied
from collector.testing import running_herald, test_config, wait_for

NOW = datetime.now(UTC).replace(microsecond=0)
ADMIN_TOKEN = "test-admin-token"
READ_TOKEN = "test-read-token"

SHIPPED = {
    "name": "orders shipped",
    "description": "every shipped order",
    "tags": ["orders"],
    "trigger": {"expect": ["app.order.shipped"], "match": {"prefect.resource.id": "app.order.*"}},
    "actions": [{"type": "do-nothing"}],
}


def order(name: str, n: int, seconds_ago: float = 0, **labels: str) -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(NOW - timedelta(seconds=seconds_ago)),
        "resource": {"prefect.resource.id": f"app.order.{n}", **labels},
        "id": uuid7_str(),
    }


@pytest.fixture
def clients(herald: Herald) -> Iterator[tuple[AutomationsClient, HeraldClient]]:
    with (
        AutomationsClient(herald.grpc_address) as automations,
        HeraldClient(herald.grpc_address) as events,
    ):
        yield automations, events


def cli(herald: Herald, *args: str, code: int = 0, stdin: str | None = None) -> Any:
    result = CliRunner().invoke(app, ["--address", herald.grpc_address, *args], input=stdin)
    assert result.exit_code == code, result.output
    return result


def herald_events(events: HeraldClient, prefix: str) -> list[dict[str, Any]]:
    page = events.query({"event": {"prefix": [prefix]}, "order": "ASC"}, limit=200)
    return list(page["events"])


def test_crud_over_grpc_emits_events_about_automations(
    clients: tuple[AutomationsClient, HeraldClient],
) -> None:
    automations, events = clients
    created = automations.create(SHIPPED)
    aid = created["id"]
    assert created["name"] == "orders shipped" and created["created"] == created["updated"]
    assert automations.read(aid)["trigger"]["expect"] == ["app.order.shipped"]
    assert [a["id"] for a in automations.list()] == [aid]
    assert [a["id"] for a in automations.find("orders shipped")] == [aid]

    updated = automations.update(aid, {**SHIPPED, "description": "changed"})
    assert updated["description"] == "changed" and updated["created"] == created["created"]
    deleted = automations.delete(aid)
    assert deleted["id"] == aid
    with pytest.raises(NotFound, match=f"Automation with id '{aid}' not found."):
        automations.read(aid)
    with pytest.raises(NotFound, match=r"Automation 'orders shipped' not found\."):
        automations.find("orders shipped")

    stored = herald_events(events, "herald.automation.")
    assert [e["event"] for e in stored] == [
        "herald.automation.created",
        "herald.automation.updated",
        "herald.automation.deleted",
    ]
    for e in stored:
        assert e["resource"] == {
            "prefect.resource.id": f"herald.automation.{aid}",
            "prefect.resource.name": "orders shipped",
        }
        assert e["related"] == []
        assert e["payload"]["id"] == aid  # the automation's JSON
    assert stored[1]["payload"]["description"] == "changed"


def test_an_id_in_the_file_is_kept_and_cannot_be_taken_twice(
    clients: tuple[AutomationsClient, HeraldClient],
) -> None:
    automations, _ = clients
    aid = "0193a000-0000-7000-8000-00000000a001"
    assert automations.create({**SHIPPED, "id": aid})["id"] == aid
    with pytest.raises(Exception, match=f"an automation with id {aid} already exists"):
        automations.create({**SHIPPED, "id": aid})
    with pytest.raises(InvalidInput, match="does not match"):
        automations.update(aid, {**SHIPPED, "id": "0193a000-0000-7000-8000-00000000a002"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"trigger": {"posture": "Proactive", "within": 5}},
            "trigger.within: `within` for Proactive triggers must be greater than or equal to 10",
        ),
        (
            {"actions": [{"type": "send-notification"}]},
            "actions[0].type: 'send-notification' is a Prefect",
        ),
        (
            {"actions": [{"type": "call-webhook", "url": "ftp://x"}]},
            "actions[0].url: must start with http:// or https://",
        ),
        (
            {"actions": [{"type": "call-webhook", "url": "http://x.test/", "body": "{{ oops"}]},
            "actions[0].body: template syntax error on line 1",
        ),
        ({"name": " "}, "name: must not be empty"),
        ({"trigger": {"type": "metric"}}, "trigger.type: metric triggers are not supported"),
    ],
)
def test_validation_errors_name_the_field(
    clients: tuple[AutomationsClient, HeraldClient], change: dict[str, Any], message: str
) -> None:
    automations, _ = clients
    with pytest.raises(InvalidInput) as info:
        automations.create({**SHIPPED, **change})
    assert str(info.value).startswith(message)
    assert automations.list() == []


def test_firings_pause_resume_and_history(
    clients: tuple[AutomationsClient, HeraldClient],
) -> None:
    automations, events = clients
    aid = automations.create(SHIPPED)["id"]
    events.emit([order("app.order.shipped", 1), order("app.order.paid", 1)])
    firings = wait_for(
        lambda: [f for f in automations.history(aid) if f["action_runs"][0]["status"] == "executed"]
    )
    assert firings[0]["triggering_event_name"] == "app.order.shipped"

    assert automations.set_enabled(aid, False)["enabled"] is False
    events.emit([order("app.order.shipped", 2)])
    assert automations.set_enabled(aid, True)["enabled"] is True
    events.emit([order("app.order.shipped", 3)])
    resumed = wait_for(lambda: h if len(h := automations.history(aid)) == 2 else None)
    ids = {f["triggering_event_id"] for f in resumed}
    assert len(ids) == 2  # order 2 arrived while paused: no firing for it
    wait_for(
        lambda: any(
            e["event"] == "herald.automation.action.executed"
            for e in herald_events(events, "herald.automation.action.")
        )
    )
    names = [e["event"] for e in herald_events(events, "herald.automation.")]
    assert names.count("herald.automation.triggered") == 2
    assert names.count("herald.automation.updated") == 2  # pause + resume


HISTORY_TRIGGER = {
    "expect": ["app.order.shipped"],
    "threshold": 2,
    "within": 600,
    "for_each": ["prefect.resource.id"],
}


def test_backtest_lists_the_firings_over_history(
    clients: tuple[AutomationsClient, HeraldClient],
) -> None:
    automations, events = clients
    # order 1 ships twice within 10 minutes, order 2 once: one firing, for order 1
    events.emit(
        [
            order("app.order.shipped", 1, 3000),
            order("app.order.shipped", 1, 2900),
            order("app.order.shipped", 2, 2800),
            order("app.order.cancelled", 3, 2700),
        ]
    )
    seen: list[tuple[int, int]] = []
    result = automations.backtest(
        since=format_time(NOW - timedelta(hours=1)),
        trigger=HISTORY_TRIGGER,
        progress=lambda done, total: seen.append((done, total)),
    )
    (firing,) = result["firings"]
    assert firing["triggering_labels"] == {"prefect.resource.id": "app.order.1"}
    assert firing["occurred"] == format_time(NOW - timedelta(seconds=2900))
    assert result["events"] == 3  # only the names the trigger can match are read
    assert seen[-1] == (3, 3)
    assert automations.history() == []  # nothing was recorded, no action ran

    # a proactive trigger: a paid order that did not ship within 5 minutes
    events.emit([order("app.order.paid", 1, 3100), order("app.order.paid", 4, 1000)])
    proactive = {
        "posture": "Proactive",
        "after": ["app.order.paid"],
        "expect": ["app.order.shipped"],
        "within": 300,
        "for_each": ["prefect.resource.id"],
    }
    result = automations.backtest(
        since=format_time(NOW - timedelta(hours=1)), until=format_time(NOW), trigger=proactive
    )
    assert [
        (f["triggering_labels"]["prefect.resource.id"], f["occurred"]) for f in result["firings"]
    ] == [("app.order.4", format_time(NOW - timedelta(seconds=700)))]


def test_backtest_from_the_cli(herald: Herald, tmp_path: Path) -> None:
    with HeraldClient(herald.grpc_address) as events:
        events.emit([order("app.order.shipped", 1, 100), order("app.order.shipped", 1, 50)])
    cli(
        herald,
        "automations",
        "create",
        "--name",
        "twice",
        "--expect",
        "app.order.shipped",
        "--threshold",
        "2",
        "--within",
        "10m",
    )
    result = cli(herald, "automations", "backtest", "twice", "--since", "1h", "--format", "json")
    (firing,) = json.loads(result.stdout)
    assert firing["kind"] == "triggered"
    trigger = tmp_path / "trigger.json"
    trigger.write_text(json.dumps(HISTORY_TRIGGER))
    result = cli(
        herald,
        *("automations", "backtest", "--from-file", str(trigger)),
        *("--since", "1h", "--format", "json"),
    )
    assert len(json.loads(result.stdout)) == 1


def test_cli_create_ls_inspect_pause_resume_delete(herald: Herald, tmp_path: Path) -> None:
    result = cli(
        herald,
        "automations",
        "create",
        "--name",
        "late",
        "--expect",
        "app.order.shipped",
        "--after",
        "app.order.paid",
        "--posture",
        "proactive",
        "--within",
        "5m",
        "--for-each",
        "prefect.resource.id",
        "--match",
        "region=eu",
        "--webhook",
        "http://hooks.test/late",
    )
    assert result.stdout.startswith("Created automation 'late' with id ")
    listed = json.loads(cli(herald, "automations", "ls", "--format", "json").stdout)
    (late,) = listed
    assert late["trigger"]["within"] == 300.0
    assert late["trigger"]["posture"] == "Proactive"
    assert late["trigger"]["match"] == {"region": "eu"}
    assert late["actions"] == [
        {
            "type": "call-webhook",
            "url": "http://hooks.test/late",
            "method": "POST",
            "headers": {},
            "body": None,
            "timeout_seconds": 10.0,
            "retries": 3,
        }
    ]
    table = cli(herald, "automations", "ls", "--format", "csv").stdout
    assert (
        "Proactive: expecting 1 app.order.shipped event within 0:05:00 after "
        "app.order.paid for each prefect.resource.id" in table
    )
    shown = json.loads(cli(herald, "automations", "inspect", "late", "--format", "json").stdout)
    assert shown["id"] == late["id"]
    bad = cli(herald, "automations", "inspect", "late", "--format", "xml", code=1)
    assert "Only 'json' and 'yaml' output formats are supported." in bad.output
    missing = cli(herald, "automations", "inspect", "nope", code=1)
    assert "Automation 'nope' not found." in missing.output

    paused = cli(herald, "automations", "pause", "late").stdout
    assert paused == f"Paused automation(s) with name 'late' and id(s) '{late['id']}'.\n"
    resumed = cli(herald, "automations", "resume", "--id", late["id"]).stdout
    assert resumed == f"Resumed automation with id '{late['id']}'.\n"
    not_there = cli(herald, "automations", "pause", "nope", code=1).output
    assert "Automation with name 'nope' not found. You can also specify an id" in not_there

    assert (
        cli(herald, "automations", "delete", "late", "--yes").stdout
        == "Deleted automation with name 'late'\n"
    )
    assert (
        cli(herald, "automations", "delete", "--all", "--yes").stdout == "No automations found.\n"
    )


def test_cli_create_from_files_in_every_form(herald: Herald, tmp_path: Path) -> None:
    one = dict(SHIPPED)
    listed = tmp_path / "many.json"
    listed.write_text(json.dumps({"automations": [one, {**one, "name": "second"}]}))
    out = cli(herald, "automations", "create", "--from-file", str(listed)).stdout
    assert out.startswith("Created 2 automation(s):\n - 'orders shipped' with id ")
    toml = tmp_path / "one.toml"
    toml.write_text(
        'name = "from toml"\n[trigger]\nexpect = ["a"]\n[[actions]]\ntype = "do-nothing"\n'
    )
    assert (
        "Created automation 'from toml'"
        in cli(herald, "automations", "create", "--from-file", str(toml)).stdout
    )
    out = cli(
        herald,
        "automations",
        "create",
        "--json",
        json.dumps([{**one, "name": "ok"}, {**one, "trigger": {"within": -1}}]),
        code=1,
    )
    assert "Created automation" not in out.stderr
    assert "Failed to create 1 automation(s):" in out.stderr
    assert "trigger.within: must be greater than or equal to 0" in out.stderr
    assert cli(
        herald, "automations", "create", "--from-file", str(tmp_path / "x.txt"), code=1
    ).output.endswith("File extension not recognized. Please use .yaml, .yml, .json or .toml\n")
    missing = str(tmp_path / "missing.json")
    assert (
        "File not found:"
        in cli(herald, "automations", "create", "--from-file", missing, code=1).output
    )
    assert "Invalid JSON:" in cli(herald, "automations", "create", "--json", "{nope", code=1).output
    names = sorted(
        a["name"] for a in json.loads(cli(herald, "automations", "ls", "--format", "json").stdout)
    )
    assert names == ["from toml", "ok", "orders shipped", "second"]
    assert (
        cli(herald, "automations", "delete", "--all", "--yes").stdout == "Deleted 4 automations.\n"
    )


def test_cli_yaml_round_trip(herald: Herald, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(SHIPPED))
    cli(herald, "automations", "create", "--from-file", str(path))
    text = cli(herald, "automations", "inspect", "orders shipped", "--format", "yaml").stdout
    data = yaml.safe_load(text)
    data["description"] = "edited in yaml"
    path.write_text(yaml.safe_dump(data))
    out = cli(herald, "automations", "update", "--id", data["id"], "--from-file", str(path)).stdout
    assert out == f"Updated automation 'orders shipped' ({data['id']})\n"


def test_cli_from_event_and_history(herald: Herald) -> None:
    with HeraldClient(herald.grpc_address) as events:
        shipped = order("app.order.shipped", 8812)
        events.emit([shipped])
    cli(herald, "automations", "create", "--from-event", shipped["id"], "--name", "8812")
    (created,) = json.loads(cli(herald, "automations", "ls", "--format", "json").stdout)
    trigger = created["trigger"]
    assert (
        trigger["match"],
        trigger["expect"],
        trigger["posture"],
        trigger["threshold"],
        trigger["within"],
    ) == ({"prefect.resource.id": "app.order.8812"}, ["app.order.shipped"], "Reactive", 1, 0.0)
    with HeraldClient(herald.grpc_address) as events:
        events.emit([order("app.order.shipped", 8812)])

    def fired() -> list[dict[str, Any]]:
        out = json.loads(cli(herald, "automations", "history", "8812", "--format", "json").stdout)
        return [f for f in out if f["action_runs"][0]["status"] == "executed"]

    (firing,) = wait_for(fired)
    assert firing["kind"] == "triggered"
    assert firing["action_runs"][0]["action_type"] == "do-nothing"


def test_the_cli_asks_before_deleting_everything(herald: Herald) -> None:
    with AutomationsClient(herald.grpc_address) as automations:
        automations.create(SHIPPED)
    out = cli(herald, "automations", "delete", "--all", stdin="n\n", code=1)
    assert "Are you sure you want to delete all 1 automations?" in out.output
    with AutomationsClient(herald.grpc_address) as automations:
        assert len(automations.list()) == 1


@pytest.fixture
def admin_herald(db_path: Path) -> Iterator[Herald]:
    tokens = [
        {"token": ADMIN_TOKEN, "scopes": ["admin"]},
        {"token": READ_TOKEN, "scopes": ["read"]},
    ]
    with running_herald(test_config(db_path, auth={"tokens": tokens})) as server:
        yield server


def test_writes_need_admin_and_reads_need_read(admin_herald: Herald) -> None:
    with AutomationsClient(admin_herald.grpc_address, token=READ_TOKEN) as reader:
        assert reader.list() == []
        with pytest.raises(PermissionDenied, match="lacks the 'admin' scope"):
            reader.create(SHIPPED)
    with AutomationsClient(admin_herald.grpc_address, token=ADMIN_TOKEN) as admin:
        assert admin.create(SHIPPED)["name"] == "orders shipped"
    with AutomationsClient(admin_herald.grpc_address, token="") as anonymous:
        with pytest.raises(Exception, match="missing bearer token"):
            anonymous.list()
