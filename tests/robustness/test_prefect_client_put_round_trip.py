"""A PUT of the automation Prefect's client read (``Automation.read(...).update()``) loses
nothing: Herald shows its ``call-webhook``/``emit-event``/``run-command`` actions to Prefect's
client in Prefect's vocabulary (extra keys keep the real fields), and Prefect's action models
drop those extra keys before the PUT. Herald puts the stored actions back where the client
sent their masked form, restores actions that kept ``herald_type``, and refuses (422, naming
what would be lost) what it cannot match — never a silent ``do-nothing``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.testing import running_herald, test_config

TOKEN = "prefect-put-admin"
PREFECT_UA = {"User-Agent": "prefect/3.9.1 (API 0.8.4)"}
NIL = "00000000-0000-0000-0000-000000000000"
# The fields of Prefect 3.9.1's client action models (src/prefect/events/actions.py): they
# are pydantic models with extra="ignore", so anything else is dropped on the way back.
PREFECT_FIELDS = {
    "do-nothing": ("type",),
    "call-webhook": ("type", "block_document_id", "payload"),
    "pause-automation": ("type", "source", "automation_id"),
    "resume-automation": ("type", "source", "automation_id"),
}

WEBHOOK = {
    "type": "call-webhook",
    "url": "http://127.0.0.1:9/hook",
    "headers": {"Authorization": "Bearer hook-secret-1"},
    "body": "{{ event.event }}",
}
EMIT = {"type": "emit-event", "event": "x.y", "resource": {"prefect.resource.id": "r"}}
RUN = {"type": "run-command", "argv": ["true"]}


def as_prefect_client_sends(view: dict[str, Any]) -> dict[str, Any]:
    """The body ``Automation.update()`` PUTs for ``view`` (what the client read): the
    automation fields, each action cut down to its Prefect model's fields."""
    out = {k: v for k, v in view.items() if k not in ("id", "created", "updated")}
    for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
        out[key] = [
            {f: a[f] for f in PREFECT_FIELDS[a["type"]] if f in a} for a in view.get(key, [])
        ]
    return out


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    tokens = [{"token": TOKEN, "scopes": ["admin", "read", "ingest"]}]
    config = test_config(tmp_path / "h.duckdb", auth={"tokens": tokens})
    with (
        running_herald(config) as herald,
        httpx.Client(
            base_url=f"http://{herald.http_address}/api",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ) as client,
    ):
        yield client


def create(api: httpx.Client, **lists: list[dict[str, Any]]) -> str:
    body: dict[str, Any] = {
        "name": "round-trip",
        "trigger": {"type": "event", "expect": ["test.put.*"], "posture": "Reactive"},
        "actions": [{"type": "do-nothing"}],
        **lists,
    }
    created = api.post("/automations/", json=body)
    assert created.status_code == 201, created.text
    aid: str = created.json()["id"]
    return aid


def revealed(api: httpx.Client, aid: str) -> dict[str, Any]:
    got = api.get(f"/automations/{aid}", params={"reveal_secrets": "true"})
    assert got.status_code == 200, got.text
    data: dict[str, Any] = got.json()
    return data


def test_prefect_update_keeps_herald_actions_it_cannot_model(api: httpx.Client) -> None:
    aid = create(
        api,
        actions=[WEBHOOK, EMIT, {"type": "pause-automation", "source": "inferred"}, RUN],
        actions_on_trigger=[EMIT],
        actions_on_resolve=[RUN, {"type": "do-nothing"}],
    )
    before = revealed(api, aid)
    view = api.get(f"/automations/{aid}", headers=PREFECT_UA).json()
    sent = as_prefect_client_sends({**view, "name": "renamed by prefect"})
    # What the real client sends: no URL, no event, no command left in the body.
    assert sent["actions"][1] == {"type": "do-nothing"}
    assert "url" not in sent["actions"][0]
    # The stored action put back is the public one: its secrets travel as markers.
    assert "hook-secret-1" not in str(view)

    put = api.put(f"/automations/{aid}", json=sent, headers=PREFECT_UA)
    assert put.status_code == 204, put.text
    after = revealed(api, aid)
    assert after["name"] == "renamed by prefect"
    for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
        assert after[key] == before[key], key


def test_prefect_payload_edit_is_the_webhook_body(api: httpx.Client) -> None:
    aid = create(api, actions=[WEBHOOK])
    [stored] = revealed(api, aid)["actions"]
    view = api.get(f"/automations/{aid}", headers=PREFECT_UA).json()
    sent = as_prefect_client_sends(view)
    sent["actions"][0]["payload"] = "edited {{ event.id }}"
    assert api.put(f"/automations/{aid}", json=sent, headers=PREFECT_UA).status_code == 204
    [action] = revealed(api, aid)["actions"]
    assert action == {**stored, "body": "edited {{ event.id }}"}


def test_actions_that_kept_herald_type_are_restored(api: httpx.Client) -> None:
    # A client that keeps extra keys (curl, a script) sends the Prefect view back as it is.
    aid = create(api, actions=[WEBHOOK, EMIT, RUN])
    before = revealed(api, aid)
    view = api.get(f"/automations/{aid}", headers=PREFECT_UA).json()
    body = {k: v for k, v in view.items() if k not in ("created", "updated")}
    assert api.put(f"/automations/{aid}", json=body).status_code == 204
    assert revealed(api, aid)["actions"] == before["actions"]
    # …also on create (e.g. a copy of an inspected automation).
    del body["id"]
    copy = api.post("/automations/", json={**body, "name": "copy"})
    assert copy.status_code == 201, copy.text
    assert revealed(api, copy.json()["id"])["actions"] == before["actions"]


def test_what_cannot_be_matched_is_refused_naming_what_would_be_lost(api: httpx.Client) -> None:
    aid = create(api, actions=[WEBHOOK, EMIT, RUN])
    before = revealed(api, aid)
    view = api.get(f"/automations/{aid}", headers=PREFECT_UA).json()
    sent = as_prefect_client_sends(view)

    # The webhook removed in Prefect: which do-nothing is the emit-event is unknowable.
    shorter = {**sent, "actions": sent["actions"][1:]}
    r = api.put(f"/automations/{aid}", json=shorter, headers=PREFECT_UA)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "emit-event" in detail and "actions[1]" in detail

    # The masked webhook moved to where no call-webhook is stored: its URL is gone.
    moved = {**sent, "actions": [sent["actions"][1], sent["actions"][0], sent["actions"][2]]}
    r = api.put(f"/automations/{aid}", json=moved, headers=PREFECT_UA)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("actions[1]") and "url" in detail

    # A herald_type contradicting the Prefect-side type.
    odd = {**sent, "actions": [{"type": "pause-automation", "herald_type": "emit-event"}]}
    r = api.put(f"/automations/{aid}", json=odd, headers=PREFECT_UA)
    assert r.status_code == 422 and "herald_type" in r.json()["detail"], r.text

    assert revealed(api, aid)["actions"] == before["actions"]


def test_a_do_nothing_from_other_clients_replaces_the_action(api: httpx.Client) -> None:
    # Only Prefect's client is shown the masked form: anyone else means what they send.
    aid = create(api, actions=[EMIT])
    body = {k: v for k, v in revealed(api, aid).items() if k not in ("created", "updated")}
    body["actions"] = [{"type": "do-nothing"}]
    assert api.put(f"/automations/{aid}", json=body).status_code == 204
    assert revealed(api, aid)["actions"] == [{"type": "do-nothing"}]
