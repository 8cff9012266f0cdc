"""`herald store migrate --to-ducklake` (docs/scale-out.md): a single-file store that served
events is copied into a lake on a real PostgreSQL catalog, and a collector on the lake serves
the same events — labels, related resources and payloads intact. Run again (a migration that
stopped half-way), it copies nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from cli.main import app
from collector.client.remote import HeraldClient
from collector.domain.ids import uuid7_str
from collector.testing import PostgresServer, running_herald, test_config


def _events(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": uuid7_str(),
            "occurred": (now - timedelta(minutes=i)).isoformat(),
            "event": f"migrate.{i % 3}",
            "resource": {"prefect.resource.id": f"svc.{i % 4}", "region": "eu"},
            "related": [{"prefect.resource.id": "user.1", "prefect.resource.role": "actor"}],
            "payload": {"i": i, "nested": {"ok": True}},
        }
        for i in range(n)
    ]


def test_a_file_store_migrated_into_a_lake_serves_the_same_events(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    db = tmp_path / "herald.duckdb"
    sent = _events(300)
    with running_herald(test_config(db, automations={"enabled": False})) as single:
        reply = httpx.post(f"http://{single.http_address}/api/events", json=sent, timeout=30)
        assert reply.status_code == 204, reply.text
        with HeraldClient(single.grpc_address) as client:
            before = {e["id"]: e for e in client.query(None, limit=1000)["events"]}
    assert len(before) == 300

    catalog = postgres.catalog(postgres.create_database())
    lake = str(tmp_path / "lake")
    args = ["store", "migrate", "--to-ducklake", "--db", str(db)]
    args += ["--catalog", catalog, "--data-path", lake]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "300 copied" in first.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 copied into the lake, 300 already there" in again.stdout

    storage = {"backend": "ducklake", "catalog": catalog, "data_path": lake}
    config = test_config(tmp_path / "c.duckdb", storage=storage, automations={"enabled": False})
    with running_herald(config) as on_lake, HeraldClient(on_lake.grpc_address) as client:
        after = {e["id"]: e for e in client.query(None, limit=1000)["events"]}
        assert after == before
        answer = client.sql("SELECT count(*) AS n FROM event_resources WHERE role = 'actor'")
        assert answer.table.to_pylist() == [{"n": 300}]


def test_migrate_says_what_it_needs(tmp_path: Path) -> None:
    missing_target = CliRunner().invoke(app, ["store", "migrate", "--db", str(tmp_path / "x")])
    assert missing_target.exit_code == 1
    assert "--to-ducklake" in missing_target.output
    no_file = CliRunner().invoke(
        app,
        [
            "store",
            "migrate",
            "--to-ducklake",
            "--db",
            str(tmp_path / "none.duckdb"),
            "--catalog",
            f"duckdb:{tmp_path / 'c.ducklake'}",
            "--data-path",
            str(tmp_path / "lake"),
        ],
    )
    assert no_file.exit_code == 4
    assert "no such file" in no_file.output
