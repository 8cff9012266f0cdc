"""The client package's one reading interface: a server (``HeraldClient``) and the store file
it wrote (``LocalReader``, the CLI's ``--db``) give the same answers in the same shapes, so a
reading command written once against ``HeraldReader`` behaves alike online and offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.client.interface import HeraldReader
from collector.client.local import LocalReader
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.errors import InvalidInput, NotFound
from collector.testing import running_herald, test_config

NOW = datetime.now(UTC)
# An explicit time range: the default one ends at each reader's own "now".
FILTER = {
    "event": {"prefix": ["app.order."]},
    "occurred": {
        "since": format_time(NOW - timedelta(hours=1)),
        "until": format_time(NOW + timedelta(minutes=1)),
    },
}
SQL = "SELECT event, count(*) AS n, min(occurred) AS first FROM events GROUP BY event ORDER BY 1"


def _event(n: int, name: str) -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(NOW - timedelta(minutes=40 - n)),
        "resource": {"prefect.resource.id": f"app.order.{n}"},
        "related": [{"prefect.resource.id": "app.shop.1", "prefect.resource.role": "shop"}],
        "payload": {"n": n},
        "id": uuid7_str(),
    }


def _answers(source: HeraldReader, event_id: str) -> dict[str, Any]:
    """Everything a reading command asks, through the interface only."""
    with source.sql_stream(SQL, all_rows=True) as stream:
        streamed = stream.read_all()
    page = source.query(FILTER, 4)
    assert page["next_page"] is not None  # a page token, valid for its own reader only
    answer = source.sql(SQL)
    return {
        "page": (page["events"], page["total"]),
        "next": source.query(None, 4, page["next_page"])["events"],
        "listed": source.events(FILTER, 9),
        "counts": source.count_groups(FILTER, "event", limit=1),
        "by_hour": source.count(FILTER, "time", "hour"),
        "event": source.get(event_id),
        "sql": (answer.table.to_pylist(), answer.truncated),
        "streamed": streamed.to_pylist(),
    }


def test_server_and_file_answer_alike(tmp_path: Path) -> None:
    db = tmp_path / "herald.duckdb"
    events = [_event(i, "app.order.paid" if i % 3 else "app.order.shipped") for i in range(12)]
    with running_herald(test_config(db)) as server:
        with HeraldClient(server.grpc_address) as client:
            assert client.emit(events) == (12, [])
            assert isinstance(client, HeraldReader)
            online = _answers(client, events[5]["id"])
            with pytest.raises(NotFound):
                client.get(uuid7_str())
            with pytest.raises(InvalidInput):
                client.sql("DELETE FROM events")
    with LocalReader(str(db)) as local:
        assert isinstance(local, HeraldReader)
        offline = _answers(local, events[5]["id"])
        with pytest.raises(NotFound):
            local.get(uuid7_str())
        with pytest.raises(InvalidInput):
            local.sql("DELETE FROM events")

    assert offline == online
    listed, total = online["listed"]
    assert total == 12 and len(listed) == 9
    assert [e["id"] for e in listed] == [e["id"] for e in reversed(events)][:9]
    counts, groups = online["counts"]
    assert (groups, [(c["label"], c["count"]) for c in counts]) == (2, [("app.order.paid", 8)])
    assert online["event"]["payload"] == {"n": 5}
