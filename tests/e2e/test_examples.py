"""The examples in examples/ run against a real `herald serve` and their events land."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.e2e.test_serve_process import ROOT, herald_serve

pytestmark = pytest.mark.e2e


def run_example(name: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_examples_send_native_and_otlp_events(tmp_path: Path) -> None:
    db = tmp_path / "examples.duckdb"
    with herald_serve(db) as served:
        ids = run_example("emit_events.py", {"HERALD_ADDRESS": served.grpc}).split()
        run_example(
            "send_otlp.py",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{served.http}",
                "OTEL_SERVICE_NAME": "checkout",
            },
        )
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0
    conn = duckdb.connect(str(db), read_only=True)
    rows = dict(
        conn.execute(
            "SELECT id::VARCHAR, follows::VARCHAR FROM events WHERE event LIKE 'app.order.%'"
        ).fetchall()
    )
    assert rows[ids[1]] == ids[0]  # delivered follows shipped
    names = {
        r[0]
        for r in conn.execute(
            "SELECT event FROM events WHERE resource_id = 'otel.service.checkout'"
        ).fetchall()
    }
    assert {"otel.span.unset", "otel.log.error"} <= names
