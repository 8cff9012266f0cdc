"""Secrets an admin writes into an automation stay out of everything a read token can see —
user SQL over every table, the feed, the automations API and CLI, the events about actions —
while the webhook still receives the real values; ``{{ secrets.NAME }}`` comes from the
server's environment or its secrets file and is never stored at all."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from typer.testing import CliRunner

from cli.main import app
from collector._proto import automations_pb2, automations_pb2_grpc
from collector.app import Herald
from collector.automations.secrets import SecretSource, UnknownSecret
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.config import load_config
from collector.domain.automations import parse_automation
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.domain.secret_markers import map_url_secrets
from collector.errors import ConfigError, InvalidInput
from collector.store.duckdb_store import EventStore
from collector.testing import (
    WebhookReceiver,
    running_herald,
    test_config,
    wait_for,
    webhook_receiver,
)

ADMIN = "secrets-admin-token"
READER = "secrets-read-token"
INGEST = "secrets-ingest-token"

HEADER_SECRET = "HdrSecret-4f1b9c2d7e"
QUERY_SECRET = "QrySecret-83a1f0c6"
USERINFO_SECRET = "UsrSecret-5d0e2b77"
ENV_SECRET = "EnvSecret-c0ffee1234"
FILE_SECRET = "FileSecret-deadbeef99"
SECRETS = [HEADER_SECRET, QUERY_SECRET, USERINFO_SECRET, ENV_SECRET, FILE_SECRET]
BASIC = base64.b64encode(f"alice:{USERINFO_SECRET}".encode()).decode()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    # Echoes each request's headers back, as httpbin does: the worst case for a recorded
    # response body.
    with webhook_receiver(echo=True) as found:
        yield found


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Herald, Path]]:
    monkeypatch.setenv("HERALD_SECRET_ENV_TOKEN", ENV_SECRET)
    secrets_file = tmp_path / "herald-secrets.env"
    secrets_file.write_text(f"# secrets for automations\nFILE_TOKEN={FILE_SECRET}\n")
    db = tmp_path / "herald.duckdb"
    tokens = [
        {"token": ADMIN, "scopes": ["admin"]},
        {"token": READER, "scopes": ["read"]},
        {"token": INGEST, "scopes": ["ingest"]},
    ]
    config = test_config(
        db,
        auth={"tokens": tokens},
        automations={
            "secrets_file": str(secrets_file),
            "evaluation_interval_seconds": 0.1,
            "allow_commands": True,
        },
    )
    with running_herald(config) as herald:
        yield herald, db


def automation(url: str) -> dict[str, Any]:
    return {
        "name": "deploy hook",
        "trigger": {"expect": ["app.deployed"]},
        "actions": [
            {
                "type": "call-webhook",
                "url": f"{url}/hook?api_key={QUERY_SECRET}&run={{{{ event.id }}}}",
                "headers": {
                    "Authorization": f"Bearer {HEADER_SECRET}",
                    "X-Env-Token": "{{ secrets.ENV_TOKEN }}",
                    "X-File-Token": "Token {{ secrets.FILE_TOKEN }}",
                    "Content-Type": "application/json",
                },
                "body": '{"deployed": "{{ event.resource.id }}"}',
                "retries": 0,
            },
            {
                "type": "call-webhook",
                "url": url.replace("http://", f"http://alice:{USERINFO_SECRET}@") + "/basic",
                "retries": 0,
            },
            {
                # `automation` in a template is the public form: no copying secrets out.
                "type": "emit-event",
                "event": "app.copied",
                "resource": {"prefect.resource.id": "app.copy"},
                "payload": {"automation": "{{ automation|tojson }}"},
            },
            {"type": "run-command", "argv": ["echo", "token={{ secrets.ENV_TOKEN }}"]},
        ],
    }


def deployed(n: int) -> dict[str, Any]:
    return {
        "event": "app.deployed",
        "occurred": format_time(datetime.now(UTC)),
        "resource": {"prefect.resource.id": f"app.service.{n}"},
        "id": uuid7_str(),
    }


def assert_no_secret(text: str, where: str) -> None:
    for secret in [*SECRETS, BASIC]:
        assert secret not in text, f"{where} shows the secret {secret!r}"


def read_everything(herald: Herald, aid: str) -> dict[str, str]:
    """Everything a read token can look at, as text."""
    seen: dict[str, str] = {}
    with HeraldClient(herald.grpc_address, token=READER) as reader:
        for table in ("automations", "action_runs", "automation_firings", "automation_state"):
            result, _ = reader.sql(f"SELECT * FROM {table}")
            seen[f"sql {table}"] = json.dumps(result.to_pylist(), default=str)
        result, _ = reader.sql("SELECT event, resource, related, payload FROM events")
        seen["sql events"] = json.dumps(result.to_pylist(), default=str)
        page = reader.query({"order": "ASC"}, limit=500)
        seen["feed"] = json.dumps(page["events"])
    with AutomationsClient(herald.grpc_address, token=READER) as automations:
        seen["api list"] = json.dumps(automations.list())
        seen["api read"] = json.dumps(automations.read(aid))
        seen["api history"] = json.dumps(automations.history(aid))
    env = {"HERALD_TOKEN": READER}
    for args in (["ls", "--format", "json"], ["inspect", "--id", aid, "--format", "yaml"]):
        result = CliRunner().invoke(
            app, ["--address", herald.grpc_address, "automations", *args], env=env
        )
        assert result.exit_code == 0, result.output
        seen[f"cli {args[0]}"] = result.output
    return seen


def executed_events(herald: Herald, count: int) -> list[dict[str, Any]]:
    with HeraldClient(herald.grpc_address, token=READER) as reader:

        def found() -> list[dict[str, Any]]:
            page = reader.query(
                {"event": {"name": ["herald.automation.action.executed"]}, "order": "ASC"},
                limit=50,
            )
            events = list(page["events"])
            return events if len(events) >= count else []

        return wait_for(found)


def test_read_token_never_sees_webhook_secrets_while_the_webhook_gets_them(
    server: tuple[Herald, Path], receiver: WebhookReceiver
) -> None:
    herald, db = server
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        created = admin.create(automation(receiver.url))
    aid = created["id"]
    # What the create call answers is the public form too.
    assert_no_secret(json.dumps(created), "the create reply")
    assert created["actions"][0]["headers"]["Authorization"].startswith("[secret:")
    assert created["actions"][0]["headers"]["X-Env-Token"] == "{{ secrets.ENV_TOKEN }}"
    assert created["actions"][0]["headers"]["Content-Type"] == "application/json"

    with HeraldClient(herald.grpc_address, token=INGEST) as ingest:
        accepted, errors = ingest.emit([deployed(1)])
    assert accepted == 1 and not errors
    wait_for(lambda: len(receiver.requests) >= 2)
    executed = executed_events(herald, 4)

    hook = next(r for r in receiver.requests if r["path"] == "/hook")
    assert hook["headers"]["Authorization"] == f"Bearer {HEADER_SECRET}"
    assert hook["headers"]["X-Env-Token"] == ENV_SECRET
    assert hook["headers"]["X-File-Token"] == f"Token {FILE_SECRET}"
    assert hook["query"]["api_key"] == QUERY_SECRET
    basic = next(r for r in receiver.requests if r["path"] == "/basic")
    assert basic["headers"]["Authorization"] == f"Basic {BASIC}"

    # The executed events: URL redacted, echoed response body scrubbed.
    for event in executed:
        assert_no_secret(json.dumps(event), "the action.executed event")
    hook_event = next(e for e in executed if "/hook" in e["payload"].get("url", ""))
    assert "api_key=[redacted]" in hook_event["payload"]["url"]
    assert "[redacted]" in hook_event["payload"]["response_body"]
    command = next(e for e in executed if e["payload"]["action_type"] == "run-command")
    assert command["payload"]["stdout"] == "token=[redacted]\n"
    assert command["payload"]["argv"] == ["echo", "token=[redacted]"]

    seen = read_everything(herald, aid)
    for where, text in seen.items():
        assert_no_secret(text, where)
    assert "app.copied" in seen["feed"] and "[redacted]" in seen["feed"]

    # The values are outside the database, in a file user SQL cannot open.
    vault = Path(f"{db}.secrets")
    assert HEADER_SECRET in vault.read_text() and oct(vault.stat().st_mode & 0o777) == "0o600"
    with HeraldClient(herald.grpc_address, token=READER) as reader:
        with pytest.raises(InvalidInput):
            reader.sql(f"SELECT * FROM read_text('{vault}')")
    # Nothing from {{ secrets.NAME }} is stored anywhere.
    assert ENV_SECRET not in vault.read_text() and FILE_SECRET not in vault.read_text()


def test_an_exported_automation_sent_back_keeps_its_secrets(
    server: tuple[Herald, Path], receiver: WebhookReceiver
) -> None:
    herald, db = server
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        created = admin.create(automation(receiver.url))
        aid = created["id"]
    with AutomationsClient(herald.grpc_address, token=READER) as reader:
        exported = reader.read(aid)
    exported["description"] = "edited from the public form"
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        updated = admin.update(aid, exported)
        assert updated["actions"][0]["headers"] == created["actions"][0]["headers"]
        # An admin may ask for the values; a reader may not.
        stub = automations_pb2_grpc.AutomationsStub(admin._channel)
        request = automations_pb2.JsonRequest(
            json=orjson.dumps({"id": aid, "reveal_secrets": True})
        )
        reply = stub.Read(request, metadata=[("authorization", f"Bearer {ADMIN}")])
        revealed = orjson.loads(reply.json)["automations"][0]
        assert revealed["actions"][0]["headers"]["Authorization"] == f"Bearer {HEADER_SECRET}"
        with pytest.raises(grpc.RpcError) as refused:
            stub.Read(request, metadata=[("authorization", f"Bearer {READER}")])
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A marker this server does not hold is refused, naming the field.
        forged = json.loads(json.dumps(exported))
        forged["actions"][0]["headers"]["Authorization"] = "[secret:0123456789abcdef]"
        with pytest.raises(InvalidInput, match=r"actions\[0\]\.headers\.Authorization"):
            admin.update(aid, forged)

    with HeraldClient(herald.grpc_address, token=INGEST) as ingest:
        ingest.emit([deployed(2)])
    hook = wait_for(lambda: next((r for r in receiver.requests if r["path"] == "/hook"), None))
    assert hook["headers"]["Authorization"] == f"Bearer {HEADER_SECRET}"

    # Deleting the automation deletes its secrets from the vault.
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        admin.delete(aid)
    assert HEADER_SECRET not in Path(f"{db}.secrets").read_text()


def test_secrets_in_an_emitted_event_are_refused_when_saved(
    server: tuple[Herald, Path],
) -> None:
    herald, _ = server
    leaking = {
        "name": "leaky",
        "trigger": {"expect": ["app.deployed"]},
        "actions": [
            {
                "type": "emit-event",
                "event": "app.copied",
                "resource": {"prefect.resource.id": "app.copy"},
                "payload": {"token": "{{ secrets.ENV_TOKEN }}"},
            }
        ],
    }
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        with pytest.raises(InvalidInput, match=r"actions\[0\]\.payload\.token: secrets"):
            admin.create(leaking)


def test_an_unknown_secret_fails_the_action_with_a_clear_reason(
    server: tuple[Herald, Path], receiver: WebhookReceiver
) -> None:
    herald, _ = server
    with AutomationsClient(herald.grpc_address, token=ADMIN) as admin:
        aid = admin.create(
            {
                "name": "missing secret",
                "trigger": {"expect": ["app.deployed"]},
                "actions": [
                    {
                        "type": "call-webhook",
                        "url": f"{receiver.url}/x",
                        "headers": {"Authorization": "Bearer {{ secrets.NOT_THERE }}"},
                    }
                ],
            }
        )["id"]
    with HeraldClient(herald.grpc_address, token=INGEST) as ingest:
        ingest.emit([deployed(3)])
    with AutomationsClient(herald.grpc_address, token=READER) as reader:

        def failed_run() -> dict[str, Any] | None:
            for firing in reader.history(aid):
                runs: list[dict[str, Any]] = firing["action_runs"]
                for run in runs:
                    if run["status"] == "failed":
                        return run
            return None

        run = wait_for(failed_run)
    assert "HERALD_SECRET_NOT_THERE" in run["reason"]
    assert not receiver.requests


def test_secrets_come_from_the_environment_first_then_the_secrets_file(tmp_path: Path) -> None:
    toml_file = tmp_path / "secrets.toml"
    toml_file.write_text('PAGER = "from-toml"\nSLACK = "toml-slack"\n')
    source = SecretSource(str(toml_file), env={"HERALD_SECRET_SLACK": "from-env"})
    assert source.get("PAGER") == "from-toml"
    assert source.get("SLACK") == "from-env"
    with pytest.raises(UnknownSecret, match="HERALD_SECRET_NOPE"):
        source.get("NOPE")
    # A rotated file is read again without a restart.
    toml_file.write_text('PAGER = "rotated-value"\n')
    os.utime(toml_file, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert source.get("PAGER") == "rotated-value"

    dotenv = tmp_path / "secrets.env"
    dotenv.write_text('# comment\nexport A="quoted value"\nB=plain=with=equals\n')
    source = SecretSource(str(dotenv), env={})
    assert source.get("A") == "quoted value"
    assert source.get("B") == "plain=with=equals"


@pytest.mark.parametrize(
    ("url", "public"),
    [
        (
            "https://h.example/p?key=abc123&x={{ event.id }}",
            "https://h.example/p?key=S&x={{ event.id }}",
        ),
        ("https://u:pw@h.example/p", "https://S@h.example/p"),
        (
            "https://{{ event.payload.h }}/p?t={{ secrets.T }}",
            "https://{{ event.payload.h }}/p?t={{ secrets.T }}",
        ),
        ("http://[::1]:8080/p?a=1&b", "http://[::1]:8080/p?a=S&b"),
        ("https://h.example/p?q={{ 'lit&eral' }}#frag", "https://h.example/p?q=S#frag"),
    ],
)
def test_which_parts_of_a_webhook_url_are_secret(url: str, public: str) -> None:
    assert map_url_secrets(url, lambda _v: "S") == public


def test_secrets_stored_by_an_older_version_are_moved_out_on_start(
    tmp_path: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_SECRET_ENV_TOKEN", ENV_SECRET)
    monkeypatch.setenv("HERALD_SECRET_FILE_TOKEN", FILE_SECRET)
    db = tmp_path / "herald.duckdb"
    data = automation(receiver.url)
    old = parse_automation({**data, "actions": data["actions"][:1]})
    store = EventStore(db)
    with store.transaction() as cur:  # the row as a version without the vault wrote it
        cur.execute(
            "INSERT INTO automations (id, name, description, enabled, tags, body, created, "
            "updated) VALUES (?, ?, '', true, [], ?, now(), now())",
            [old.id, old.name, json.dumps(old.model_dump(mode="json"))],
        )
    store.close()
    tokens = [{"token": READER, "scopes": ["read"]}, {"token": INGEST, "scopes": ["ingest"]}]
    with running_herald(test_config(db, auth={"tokens": tokens})) as herald:
        with HeraldClient(herald.grpc_address, token=READER) as reader:
            result, _ = reader.sql("SELECT body FROM automations")
            assert_no_secret(json.dumps(result.to_pylist()), "a migrated body")
        with HeraldClient(herald.grpc_address, token=INGEST) as ingest:
            ingest.emit([deployed(4)])
        hook = wait_for(lambda: next(iter(receiver.requests), None))
    assert hook["headers"]["Authorization"] == f"Bearer {HEADER_SECRET}"
    assert hook["query"]["api_key"] == QUERY_SECRET


def test_secret_variables_are_not_config_keys_and_a_missing_secrets_file_stops_the_start(
    tmp_path: Path,
) -> None:
    config = load_config(env={"HERALD_SECRET_PAGER_TOKEN": "x", "HERALD_QUERY__PAGE_SIZE": "20"})
    assert config.query.page_size == 20
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError, match=r"automations\.secrets_file: cannot read .*nope\.env"):
        with running_herald(
            test_config(tmp_path / "h.duckdb", automations={"secrets_file": str(missing)})
        ):
            pass
