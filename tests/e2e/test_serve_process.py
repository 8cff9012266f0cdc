"""End to end: `herald serve` as a real subprocess; events from the CLI, HTTP and the SDK;
SIGTERM; restart; everything still there and nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from contextlib import AbstractContextManager
from pathlib import Path

import duckdb
import httpx
import pytest

from collector.domain.ids import uuid7_str
from collector.testing import ServedProcess, ports_zero, serve_command, serve_process

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def herald_serve(db: Path, *extra: str) -> AbstractContextManager[ServedProcess]:
    """`herald serve` on ``db`` with both ports picked by the OS."""
    return serve_process(*ports_zero(db, *extra))


def run_cli(
    served: ServedProcess, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "--address", served.grpc, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def stored(db: Path) -> dict[str, tuple[str, str]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        rows = conn.execute(
            "SELECT id::VARCHAR, event, resource->>'prefect.resource.id' FROM events"
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2]) for r in rows}


SDK_SCRIPT = textwrap.dedent(
    """
    from collector import emit_event
    event = emit_event("sdk.job.finished", resource={"prefect.resource.id": "sdk.job.1"},
                       payload={"ok": True})
    print(event.id)
    """
)  # no explicit flush: the SDK flushes at interpreter exit


def test_serve_cli_http_sdk_sigterm_restart(tmp_path: Path) -> None:
    db = tmp_path / "e2e.duckdb"
    with herald_serve(db) as served:
        cli = run_cli(
            served,
            "emit",
            "app.order.shipped",
            "--resource-id",
            "app.order.8812",
            "--resource",
            "region=eu",
            "--payload",
            '{"carrier": "DHL"}',
        )
        assert cli.returncode == 0, cli.stderr
        cli_id = cli.stdout.strip()

        http_id = uuid7_str()
        reply = httpx.post(
            f"http://{served.http}/api/events",
            json=[
                {"event": "curl.sent", "resource": {"prefect.resource.id": "curl.1"}, "id": http_id}
            ],
        )
        assert reply.status_code == 204

        sdk = subprocess.run(
            [sys.executable, "-c", SDK_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HERALD_ADDRESS": served.grpc},
        )
        assert sdk.returncode == 0, sdk.stderr
        sdk_id = sdk.stdout.strip()

        bad = run_cli(served, "emit", "x", "--resource-id", "r", "--payload", "[1]")
        assert bad.returncode != 0
        assert "--payload: must be a JSON object" in bad.stderr
        assert "Traceback" not in bad.stderr

        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0

    events = stored(db)
    assert events[cli_id] == ("app.order.shipped", "app.order.8812")
    assert events[http_id] == ("curl.sent", "curl.1")
    assert events[sdk_id] == ("sdk.job.finished", "sdk.job.1")

    with herald_serve(db) as served:
        # the same id again after a restart is still stored once
        reply = httpx.post(
            f"http://{served.http}/api/events",
            json=[
                {"event": "curl.sent", "resource": {"prefect.resource.id": "curl.1"}, "id": http_id}
            ],
        )
        assert reply.status_code == 204
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=60) == 0
    assert stored(db) == events


def test_cli_without_a_server_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--address",
            "127.0.0.1:9",
            "emit",
            "a",
            "--resource-id",
            "r",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "no Herald server at 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[storage]\npaht = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "storage.paht: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_server_on_the_same_file_fails_clearly(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    with herald_serve(db) as served:
        result = subprocess.run(
            serve_command(*ports_zero(db)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "in use by another process" in result.stderr
        assert "Traceback" not in result.stderr
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=60)
