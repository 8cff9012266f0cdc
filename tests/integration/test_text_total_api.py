"""A text search whose matches pass ``query.text_total_limit``: every surface says the total is
a lower bound — HTTP (an extra key, present only then), gRPC (a field), the SDK client, the
CLI ("3+") and the web UI — and paging still returns every match, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.testing import running_herald, test_config

NOW = datetime.now(UTC)
LIMIT = 3


def _event(i: int, message: str) -> dict[str, Any]:
    return {
        "event": "app.request.done",
        "occurred": format_time(NOW - timedelta(minutes=i)),
        "resource": {"prefect.resource.id": f"app.request.{i}"},
        "payload": {"message": message},
        "id": uuid7_str(),
    }


@pytest.fixture
def server(db_path: Path) -> Iterator[Herald]:
    config = test_config(db_path, query={"text_total_limit": LIMIT})
    with running_herald(config) as herald:
        events = [_event(i, "upstream Timeout") for i in range(8)]
        events += [_event(100 + i, "fine") for i in range(2)]
        with HeraldClient(herald.grpc_address) as client:
            assert client.emit(events) == (10, [])
        yield herald


def test_every_surface_says_the_total_is_a_lower_bound(server: Herald) -> None:
    base = f"http://{server.http_address}"
    text = {"text": {"query": "timeout"}}
    page = httpx.post(f"{base}/api/events/filter", json={"filter": text, "limit": 5}).json()
    assert (page["total"], page["total_is_lower_bound"]) == (LIMIT, True)
    ids = [e["id"] for e in page["events"]]
    while page["next_page"]:
        page = httpx.get(page["next_page"]).json()
        assert page["total_is_lower_bound"] is True
        ids += [e["id"] for e in page["events"]]
    assert len(ids) == len(set(ids)) == 8  # the pages are exact

    # Below the limit the page is exactly Prefect's EventPage: no extra key.
    exact = httpx.post(
        f"{base}/api/events/filter", json={"filter": {"text": {"query": "fine"}}}
    ).json()
    assert set(exact) == {"events", "total", "next_page"} and exact["total"] == 2

    with HeraldClient(server.grpc_address) as client:
        first = client.query(text, limit=5)
        assert (first["total"], first["total_is_lower_bound"]) == (LIMIT, True)
        listed = client.listing(text, 100)
        assert (len(listed.events), listed.total, listed.total_is_lower_bound) == (8, LIMIT, True)
        assert client.query({"text": {"query": "fine"}})["total_is_lower_bound"] is False

    result = CliRunner().invoke(
        app,
        [
            "--address",
            server.grpc_address,
            "events",
            "ls",
            "--text",
            "timeout",
            "--format",
            "table",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"8 of {LIMIT}+ matching events" in result.output

    html = httpx.get(f"{base}/", params={"q": "timeout"}).text
    assert f">{LIMIT}+ events<" in html
