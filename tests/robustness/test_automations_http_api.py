"""The Prefect-shaped automations JSON API (``/api/automations/…``) over real HTTP against a
real server: the CRUD round trip in Prefect's statuses, Prefect's filter body, scopes (read to
list, admin to change), errors as JSON bodies that name the field (a Prefect action type
Herald lacks is a 422 naming it) and never a 500 for anything a client can send."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.app import Herald
from collector.testing import running_herald, test_config, wait_for

ADMIN = "automations-http-admin"
READER = "automations-http-reader"


def automation(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["test.http.api"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [{"type": "do-nothing"}],
        **extra,
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Herald]:
    tokens = [
        {"token": ADMIN, "scopes": ["admin", "read", "ingest"]},
        {"token": READER, "scopes": ["read"]},
    ]
    with running_herald(test_config(tmp_path / "h.duckdb", auth={"tokens": tokens})) as h:
        yield h


@pytest.fixture
def admin(server: Herald) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://{server.http_address}/api",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def reader(server: Herald) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://{server.http_address}/api",
        headers={"Authorization": f"Bearer {READER}"},
        timeout=30,
    ) as client:
        yield client


def test_crud_round_trip_in_prefects_statuses(admin: httpx.Client) -> None:
    created = admin.post("/automations/", json=automation("first", tags=["a"]))
    assert created.status_code == 201, created.text
    body = created.json()
    aid = body["id"]
    assert body["name"] == "first" and body["enabled"] is True and body["created"]

    got = admin.get(f"/automations/{aid}")
    assert got.status_code == 200 and got.json()["id"] == aid

    # PATCH {"enabled": false} is a pause (204, as Prefect answers); the read shows it.
    assert admin.patch(f"/automations/{aid}", json={"enabled": False}).status_code == 204
    assert admin.get(f"/automations/{aid}").json()["enabled"] is False
    assert admin.patch(f"/automations/{aid}", json={"enabled": True}).status_code == 204
    assert admin.get(f"/automations/{aid}").json()["enabled"] is True

    # PUT replaces the whole automation, keeping its id.
    replaced = admin.put(f"/automations/{aid}", json=automation("renamed", description="d"))
    assert replaced.status_code == 204, replaced.text
    after = admin.get(f"/automations/{aid}").json()
    assert (after["name"], after["description"], after["tags"]) == ("renamed", "d", [])

    assert admin.delete(f"/automations/{aid}").status_code == 204
    gone = admin.get(f"/automations/{aid}")
    assert gone.status_code == 404 and aid in gone.json()["detail"]
    assert admin.delete(f"/automations/{aid}").status_code == 404
    assert admin.patch(f"/automations/{aid}", json={"enabled": True}).status_code == 404


def test_filter_count_sort_and_pages(admin: httpx.Client) -> None:
    ids = {}
    for name, tags in (("b", ["x"]), ("a", ["x", "y"]), ("c", [])):
        r = admin.post("/automations/", json=automation(name, tags=tags))
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]

    def names(body: dict[str, Any]) -> list[str]:
        r = admin.post("/automations/filter", json=body)
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()]

    assert names({}) == ["a", "b", "c"]  # NAME_ASC by default
    assert names({"sort": "NAME_DESC"}) == ["c", "b", "a"]
    assert names({"sort": "CREATED_DESC"}) == ["c", "a", "b"]
    assert names({"sort": "NAME_ASC", "limit": 2, "offset": 1}) == ["b", "c"]
    assert names({"automations": {"name": {"any_": ["b", "c"]}}}) == ["b", "c"]
    assert names({"automations": {"tags": {"all_": ["x", "y"]}}}) == ["a"]
    assert names({"automations": {"tags": {"any_": ["x"]}}}) == ["a", "b"]
    assert names({"automations": {"tags": {"is_null_": True}}}) == ["c"]
    assert names({"automations": {"id": {"any_": [ids["a"], ids["c"]]}}}) == ["a", "c"]
    assert names({"automations": {"id": None, "name": {"any_": ["a"]}}}) == ["a"]
    # Exactly what Prefect's client sends for `prefect automation ls`.
    assert names({"automations": None, "sort": None, "limit": None, "offset": 0}) == [
        "a",
        "b",
        "c",
    ]
    count = admin.post("/automations/count", json={"automations": {"tags": {"any_": ["x"]}}})
    assert count.status_code == 200 and count.json() == 2
    # The PATCH changes the updated time: UPDATED_DESC puts it first.
    assert admin.patch(f"/automations/{ids['b']}", json={"enabled": False}).status_code == 204
    assert names({"sort": "UPDATED_DESC"})[0] == "b"


def test_prefect_action_types_herald_lacks_are_a_422_naming_the_type(
    admin: httpx.Client,
) -> None:
    for kind in ("run-deployment", "send-notification", "cancel-flow-run"):
        body = automation("prefect-only")
        body["actions"] = [{"type": "do-nothing"}, {"type": kind}]
        r = admin.post("/automations/", json=body)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith("actions[1].type:") and repr(kind) in detail
        assert "Herald does not have" in detail
    # Prefect's webhook (a block) is named, not a bare "unknown field".
    body = automation("block-webhook")
    body["actions"] = [{"type": "call-webhook", "block_document_id": "0" * 32, "payload": "x"}]
    r = admin.post("/automations/", json=body)
    assert r.status_code == 422 and "not a Prefect webhook block" in r.json()["detail"]
    # Nothing was stored by the refused calls.
    assert admin.post("/automations/filter", json={}).json() == []


def test_changes_need_admin_reads_need_read(
    server: Herald, admin: httpx.Client, reader: httpx.Client
) -> None:
    aid = admin.post("/automations/", json=automation("scoped")).json()["id"]
    assert reader.post("/automations/filter", json={}).status_code == 200
    assert reader.get(f"/automations/{aid}").status_code == 200
    for method, path, body in (
        ("POST", "/automations/", automation("x")),
        ("PUT", f"/automations/{aid}", automation("x")),
        ("PATCH", f"/automations/{aid}", {"enabled": False}),
        ("DELETE", f"/automations/{aid}", None),
        ("GET", f"/automations/{aid}?reveal_secrets=true", None),
    ):
        r = reader.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert "detail" in r.json()
    with httpx.Client(base_url=f"http://{server.http_address}/api") as anonymous:
        r = anonymous.post("/automations/filter", json={})
        assert r.status_code == 401 and "detail" in r.json()
    # The reader changed nothing.
    assert admin.get(f"/automations/{aid}").json()["enabled"] is True


HOSTILE_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b"{}",
    b'{"name": null}',
    b'{"name": "x", "trigger": [], "actions": {}}',
    b'{"name": "x", "trigger": {"type": "event", "within": "forever"}, "actions": []}',
    b'{"enabled": "yes"}',
    b'{"enabled": true, "name": "x"}',
    b'{"sort": "SIDEWAYS"}',
    b'{"limit": -1}',
    b'{"limit": true}',
    b'{"offset": "a"}',
    b'{"automations": []}',
    b'{"automations": {"name": {"any_": "x"}}}',
    b'{"automations": {"created": {"before_": "yesterday"}}}',
    b'{"automations": {"tags": {"is_null_": 3}}}',
    b'{"automations": {"names": {}}}',
    b'{"automations": {"id": {"any_": ["nope"]}}}',
    b'{"id": "not-a-uuid", "name": "x", "trigger": {"type": "event"}, "actions": []}',
    '{"name": "\u0000\ud800"}'.encode("utf-8", "surrogatepass"),
]


def test_no_body_or_id_is_a_500(admin: httpx.Client) -> None:
    aid = admin.post("/automations/", json=automation("target")).json()["id"]
    paths = [
        ("POST", "/automations/"),
        ("POST", "/automations/filter"),
        ("POST", "/automations/count"),
        ("PUT", f"/automations/{aid}"),
        ("PATCH", f"/automations/{aid}"),
    ]
    for method, path in paths:
        for body in HOSTILE_BODIES:
            r = admin.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert r.status_code < 500, (method, path, body, r.status_code, r.text)
            if r.status_code >= 400:
                assert isinstance(r.json()["detail"], str), (method, path, body)
    for bad_id in ("nope", "1234", "%00", "x" * 300):
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            r = admin.request(method, f"/automations/{bad_id}", json={"enabled": True})
            assert r.status_code in (400, 404), (method, bad_id, r.status_code)
    # The target survived every one of those calls, unchanged.
    assert admin.get(f"/automations/{aid}").json()["name"] == "target"


def test_prefect_client_sees_herald_actions_in_its_vocabulary(admin: httpx.Client) -> None:
    body = automation("webhooks")
    body["actions"] = [
        {"type": "call-webhook", "url": "http://127.0.0.1:9/hook", "body": "{{ event.event }}"},
        {"type": "emit-event", "event": "x.y", "resource": {"prefect.resource.id": "r"}},
        {"type": "pause-automation", "source": "inferred"},
    ]
    aid = admin.post("/automations/", json=body).json()["id"]
    plain = admin.get(f"/automations/{aid}").json()
    assert [a["type"] for a in plain["actions"]] == [
        "call-webhook",
        "emit-event",
        "pause-automation",
    ]
    assert "block_document_id" not in plain["actions"][0]
    seen = admin.get(f"/automations/{aid}", headers={"User-Agent": "prefect/3.9.1 (API 0.8.4)"})
    actions = seen.json()["actions"]
    assert actions[0]["type"] == "call-webhook"
    assert actions[0]["block_document_id"] == "00000000-0000-0000-0000-000000000000"
    assert actions[0]["payload"] == "{{ event.event }}"
    assert actions[0]["url"] == "http://127.0.0.1:9/hook"
    assert (actions[1]["type"], actions[1]["herald_type"]) == ("do-nothing", "emit-event")
    assert actions[2] == plain["actions"][2]


def test_a_created_automation_fires_and_a_patch_pauses_it(admin: httpx.Client) -> None:
    """The API drives the one automations service: what it creates is evaluated at once, and
    a PATCH pause stops it while a witness automation on the same event keeps firing."""
    aid = admin.post("/automations/", json=automation("fires")).json()["id"]
    witness = admin.post("/automations/", json=automation("witness")).json()["id"]

    def emit() -> None:
        event = {"event": "test.http.api", "resource": {"prefect.resource.id": "r.1"}}
        assert admin.post("/events", json=[event]).status_code == 204

    def fired(automation_id: str) -> int:
        found = admin.post(
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["herald.automation.triggered"]},
                    "resource": {"id": [f"herald.automation.{automation_id}"]},
                }
            },
        )
        assert found.status_code == 200, found.text
        total: int = found.json()["total"]
        return total

    emit()
    wait_for(lambda: fired(aid) == 1 and fired(witness) == 1, timeout=30)
    assert admin.patch(f"/automations/{aid}", json={"enabled": False}).status_code == 204
    emit()
    # Both see the same committed events, in order: once the witness fired on the second
    # one, the paused automation has been through it too.
    wait_for(lambda: fired(witness) == 2, timeout=30)
    assert fired(aid) == 1
