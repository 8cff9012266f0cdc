"""End to end: ``herald serve`` names its version in the readiness line, and on SIGTERM says it
is draining — ``/readyz`` 503 with the reason, ``herald status`` exit 4 — while it goes on
serving for ``server.drain_delay_seconds``, then exits 0 with what it acknowledged stored."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.testing import ports_zero, serve_process, wait_for
from collector.version import herald_version

pytestmark = pytest.mark.e2e

DRAIN_SECONDS = 4.0


def test_sigterm_turns_readiness_503_while_still_serving(tmp_path: Path) -> None:
    db = tmp_path / "drain.duckdb"
    env = {"HERALD_SERVER__DRAIN_DELAY_SECONDS": str(DRAIN_SECONDS)}
    with serve_process(*ports_zero(db), env=env) as served:
        ready_line = next(line for line in served.log if "herald listening" in line)
        assert f" version={herald_version()} " in ready_line
        base = f"http://{served.http}"
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, what="ready")

        sent = time.monotonic()
        served.proc.terminate()  # SIGTERM
        wait_for(
            lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 503,
            timeout=DRAIN_SECONDS,
            what="readiness 503",
        )
        body = httpx.get(f"{base}/readyz", timeout=10).json()
        assert body["checks"]["draining"] == "the server is shutting down"
        assert body["reason"] == "draining: the server is shutting down"
        assert body["version"] == herald_version()
        # Still serving: a load balancer that has not noticed yet loses nothing.
        late = {
            "event": "test.drain.late",
            "occurred": format_time(datetime.now(UTC)),
            "resource": {"prefect.resource.id": "test.drain"},
            "id": uuid7_str(),
        }
        assert httpx.post(f"{base}/api/events", json=[late], timeout=10).status_code == 204
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        status = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--http", served.http],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 4, status.stdout + status.stderr
        assert "NOT READY (draining: the server is shutting down)" in status.stdout

        assert served.proc.wait(timeout=DRAIN_SECONDS + 30) == 0, "".join(served.log)
        assert time.monotonic() - sent >= DRAIN_SECONDS * 0.9  # it waited before closing
    with duckdb.connect(str(db), read_only=True) as conn:
        stored = conn.execute("SELECT event FROM events").fetchall()
    assert stored == [("test.drain.late",)]
