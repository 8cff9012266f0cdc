"""The feed over gRPC and HTTP, the live tail, SQL and the CLI's reading commands, against a
real server (and, for --db, a real file)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.errors import InvalidFilter, InvalidInput, NotFound
from collector.testing import running_herald, test_config

NOW = datetime.now(UTC)


def order(
    n: int, name: str = "app.order.shipped", minutes_ago: float = 0, **labels: str
) -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(NOW - timedelta(minutes=minutes_ago)),
        "resource": {
            "prefect.resource.id": f"app.order.{n}",
            "prefect.resource.name": f"Order {n}",
            **labels,
        },
        "related": [
            {"prefect.resource.id": f"app.customer.{n % 3}", "prefect.resource.role": "customer"}
        ],
        "payload": {"n": n},
        "id": uuid7_str(),
    }


@pytest.fixture
def loaded(herald: Herald) -> Herald:
    events = [order(i, minutes_ago=60 - i, region="eu" if i % 2 else "us") for i in range(30)]
    events += [order(100 + i, "app.order.cancelled", minutes_ago=30 - i) for i in range(5)]
    with HeraldClient(herald.grpc_address) as client:
        assert client.emit(events) == (35, [])
    return herald


def cli(herald: Herald, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--address", herald.grpc_address, *args])
    assert result.exit_code == 0, result.output
    return result


def test_grpc_pages_cover_everything_once_while_events_arrive(loaded: Herald) -> None:
    with HeraldClient(loaded.grpc_address) as client:
        page = client.query({"event": {"prefix": ["app.order."]}}, limit=10)
        assert page["total"] == 35
        seen = [e["id"] for e in page["events"]]
        while page["next_page"]:
            # newer events keep arriving; the frozen pages neither shift nor grow
            client.emit([order(500 + len(seen))])
            page = client.query(None, None, page["next_page"])
            seen += [e["id"] for e in page["events"]]
    assert len(seen) == len(set(seen)) == 35


def test_tampered_page_token_is_rejected(loaded: Herald) -> None:
    with HeraldClient(loaded.grpc_address) as client:
        page = client.query(None, limit=5)
        token = page["next_page"]
        assert token is not None
        with pytest.raises(Exception, match="page token"):
            client.query(None, None, token[:-3] + "AAA")
    reply = httpx.get(
        f"http://{loaded.http_address}/api/events/filter/next",
        params={"page-token": "bm9wZQ.bm9wZQ"},
    )
    assert reply.status_code == 400
    assert "page token" in reply.json()["detail"]


def test_http_filter_and_next_page_in_prefect_shapes(loaded: Herald) -> None:
    base = f"http://{loaded.http_address}/api/events"
    body = {"filter": {"resource": {"labels": {"region": "eu"}}}, "limit": 10}
    first = httpx.post(f"{base}/filter", json=body).json()
    assert first["total"] == 15 and len(first["events"]) == 10
    assert first["next_page"].startswith(f"http://{loaded.http_address}/api/events/filter/next?")
    second = httpx.get(first["next_page"]).json()
    assert len(second["events"]) == 5 and second["next_page"] is None
    assert {e["resource"]["region"] for e in first["events"] + second["events"]} == {"eu"}
    assert set(first["events"][0]) == {
        "occurred",
        "event",
        "resource",
        "related",
        "payload",
        "id",
        "follows",
        "received",
    }


def test_http_count_by_event_and_time(loaded: Herald) -> None:
    base = f"http://{loaded.http_address}/api/events/count-by"
    by_event = httpx.post(f"{base}/event", json={"filter": {}}).json()
    assert [(c["label"], c["count"]) for c in by_event] == [
        ("app.order.shipped", 30),
        ("app.order.cancelled", 5),
    ]
    since = format_time(NOW - timedelta(hours=2))
    by_time = httpx.post(
        f"{base}/time",
        json={"filter": {"occurred": {"since": since}}, "time_unit": "hour", "time_interval": 1},
    ).json()
    assert sum(c["count"] for c in by_time) == 35
    assert all(c["count"] >= 0 for c in by_time) and len(by_time) >= 2
    bad = httpx.post(f"{base}/time", json={"filter": {}, "time_unit": "second", "time_interval": 1})
    assert bad.status_code == 400 and "buckets" in bad.json()["detail"]


def test_get_event_and_not_found(loaded: Herald) -> None:
    with HeraldClient(loaded.grpc_address) as client:
        some = client.query(None, limit=1)["events"][0]
        assert client.get(some["id"]) == some
        with pytest.raises(NotFound):
            client.get(uuid7_str())


def test_sql_over_grpc_and_refusals(loaded: Herald) -> None:
    with HeraldClient(loaded.grpc_address) as client:
        table, truncated = client.sql(
            "SELECT resource->>'region' AS region, count(*) AS n FROM events "
            "WHERE event = 'app.order.shipped' GROUP BY ALL ORDER BY region"
        )
        assert table.to_pylist() == [{"region": "eu", "n": 15}, {"region": "us", "n": 15}]
        assert not truncated
        for bad in (
            "SELECT * FROM read_csv('/etc/passwd')",
            "COPY events TO '/tmp/x.csv'",
            "ATTACH '/tmp/x.duckdb'",
            "INSTALL httpfs",
        ):
            with pytest.raises(InvalidInput, match=r"refused|read-only"):
                client.sql(bad)


def test_tail_backfill_then_live_without_duplicates(loaded: Herald) -> None:
    received: list[dict[str, Any]] = []
    ready = threading.Event()
    live = [order(900 + i, "app.order.refunded") for i in range(3)]

    def consume() -> None:
        with HeraldClient(loaded.grpc_address) as client:
            for kind, item in client.tail({"event": {"prefix": ["app.order.re"]}}, backfill=True):
                assert kind == "event"
                received.append(item)
                if len(received) == 1:
                    ready.set()
                if len(received) == 4:
                    return

    with HeraldClient(loaded.grpc_address) as client:
        client.emit([order(800, "app.order.returned")])  # the backfill
        consumer = threading.Thread(target=consume)
        consumer.start()
        assert ready.wait(10)
        client.emit(live[:1])
        client.emit(live)  # a re-send of live[0] must not show twice
    consumer.join(10)
    names = [e["event"] for e in received]
    assert names == ["app.order.returned"] + ["app.order.refunded"] * 3
    assert len({e["id"] for e in received}) == 4


def test_tail_honours_related_filters_and_reports_lag(db_path: Path) -> None:
    config = test_config(db_path, query={"tail_buffer_events": 2})
    with running_herald(config) as herald:
        assert herald.tail is not None
        from collector.domain.filters import parse_filter

        sub = herald.tail.subscribe(parse_filter({"related": {"id": ["app.customer.1"]}}))
        with HeraldClient(herald.grpc_address) as client:
            client.emit([order(i) for i in range(12)])  # customer 1: orders 1, 4, 7, 10

        import asyncio

        async def drain() -> list[tuple[str, Any]]:
            out: list[tuple[str, Any]] = []
            while len(out) < 3:
                out.append(await sub.next())
            return out

        got = asyncio.run_coroutine_threadsafe(drain(), herald.tail._loop).result(10)
        assert got[0] == ("lagged", 2)
        assert [item["resource"]["prefect.resource.id"] for _, item in got[1:]] == [
            "app.order.1",
            "app.order.4",
        ]


def test_cli_ls_show_count_sql_as_json(loaded: Herald, tmp_path: Path) -> None:
    out = json.loads(
        cli(loaded, "events", "ls", "--event", "app.order.cancelled", "--format", "json").stdout
    )
    assert [e["event"] for e in out] == ["app.order.cancelled"] * 5
    out = json.loads(
        cli(
            loaded,
            "events",
            "ls",
            "--label",
            "region=e*",
            "--related",
            "customer=app.customer.0",
            "--limit",
            "100",
            "--format",
            "json",
        ).stdout
    )
    assert out and all(e["resource"]["region"] == "eu" for e in out)
    assert all(e["related"][0]["prefect.resource.id"] == "app.customer.0" for e in out)
    shown = json.loads(cli(loaded, "events", "show", out[0]["id"], "--format", "json").stdout)
    assert shown == [out[0]]
    counts = json.loads(
        cli(
            loaded,
            "events",
            "count",
            "--by",
            "resource",
            "--event",
            "app.order.cancelled",
            "--format",
            "json",
        ).stdout
    )
    assert {c["label"] for c in counts} == {f"Order {100 + i}" for i in range(5)}
    rows = json.loads(
        cli(loaded, "sql", "SELECT count(*) AS n FROM events", "--format", "json").stdout
    )
    assert rows == [{"n": 35}]
    target = tmp_path / "out.parquet"
    cli(loaded, "sql", "SELECT id, event FROM events", "--output", str(target))
    assert pq.read_table(target).num_rows == 35


def test_cli_piped_output_is_jsonl(loaded: Herald) -> None:
    lines = cli(loaded, "events", "ls", "-n", "3").stdout.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["id"] for line in lines)


def test_cli_errors_are_one_line(loaded: Herald) -> None:
    result = CliRunner().invoke(
        app, ["--address", loaded.grpc_address, "sql", "DELETE FROM events"]
    )
    assert result.exit_code == 1
    assert "only read-only queries" in result.output
    result = CliRunner().invoke(
        app, ["--address", loaded.grpc_address, "events", "ls", "--filter-json", '{"evnt": {}}']
    )
    assert result.exit_code == 1 and "evnt" in result.output


def test_cli_reads_a_file_offline(db_path: Path) -> None:
    with running_herald(test_config(db_path)) as herald:
        with HeraldClient(herald.grpc_address) as client:
            client.emit([order(1), order(2)])
    result = CliRunner().invoke(app, ["events", "ls", "--db", str(db_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2
    result = CliRunner().invoke(
        app, ["sql", "SELECT count(*) AS n FROM events", "--db", str(db_path), "--format", "json"]
    )
    assert json.loads(result.stdout) == [{"n": 2}]


def test_read_scope_is_required(secured_herald: Herald) -> None:
    from tests.conftest import INGEST_TOKEN, READ_TOKEN

    reply = httpx.post(
        f"http://{secured_herald.http_address}/api/events/filter",
        json={},
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    )
    assert reply.status_code == 403
    reply = httpx.post(
        f"http://{secured_herald.http_address}/api/events/filter",
        json={},
        headers={"Authorization": f"Bearer {READ_TOKEN}"},
    )
    assert reply.status_code == 200


def test_invalid_filter_is_a_clear_error(loaded: Herald) -> None:
    with HeraldClient(loaded.grpc_address) as client:
        with pytest.raises(Exception, match="filter"):
            client.query({"occurred": {"since": "yesterday-ish"}})
    _ = InvalidFilter
