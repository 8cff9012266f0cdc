"""End to end: automations in a real `herald serve` subprocess, created from the CLI, calling a
real webhook receiver — a reactive firing with a rendered body, a proactive heartbeat trigger
that fires when the events stop, and a hard kill in the middle of its window that neither
loses nor repeats the firing."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.testing import ServedProcess, wait_for
from tests.e2e.test_serve_process import herald_serve, run_cli

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook receiver on 127.0.0.1, port 0: records (path, body, wall time)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, datetime]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls.append((self.path, body, datetime.now(UTC)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[str, bytes, datetime]]:
        return [c for c in self.calls if c[0] == path]


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def post_events(served: ServedProcess, *events: dict[str, Any]) -> None:
    reply = httpx.post(f"http://{served.http}/api/events", json=list(events), timeout=10)
    assert reply.status_code == 204, reply.text


def heartbeat(worker: str) -> dict[str, Any]:
    return {
        "event": "app.heartbeat",
        "resource": {"prefect.resource.id": worker},
        "occurred": format_time(datetime.now(UTC)),
        "id": uuid7_str(),
    }


def sql(served: ServedProcess, query: str) -> list[dict[str, Any]]:
    out = run_cli(served, "sql", query, "--format", "json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_automations_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "e2e.duckdb"
    with receiver() as hook:
        with herald_serve(db) as served:
            # reactive, from a file, with a templated body
            spec = tmp_path / "shipped.json"
            spec.write_text(
                json.dumps(
                    {
                        "name": "shipped",
                        "trigger": {"expect": ["app.order.shipped"]},
                        "actions": [
                            {
                                "type": "call-webhook",
                                "url": f"{hook.url}/shipped",
                                "body": '{"order": "{{ event.resource.id }}", '
                                '"carrier": "{{ event.payload.carrier }}"}',
                            }
                        ],
                    }
                )
            )
            created = run_cli(served, "automations", "create", "--from-file", str(spec))
            assert created.returncode == 0, created.stderr
            assert created.stdout.startswith("Created automation 'shipped' with id ")
            # proactive heartbeats (P§5.6): fires 10 s after the last one, per worker
            created = run_cli(
                served,
                "automations",
                "create",
                "--name",
                "quiet",
                "--after",
                "app.heartbeat",
                "--expect",
                "app.heartbeat",
                "--for-each",
                "prefect.resource.id",
                "--posture",
                "Proactive",
                "--within",
                "10s",
                "--webhook",
                f"{hook.url}/quiet",
            )
            assert created.returncode == 0, created.stderr

            emitted = run_cli(
                served,
                "emit",
                "app.order.shipped",
                "--resource-id",
                "app.order.8812",
                "--payload",
                '{"carrier": "DHL"}',
            )
            assert emitted.returncode == 0, emitted.stderr
            (call,) = wait_for(lambda: hook.on("/shipped"), 10, "the reactive webhook")
            assert json.loads(call[1]) == {"order": "app.order.8812", "carrier": "DHL"}

            beats = []
            for _ in range(3):
                beats.append(heartbeat("app.worker.1"))
                post_events(served, beats[-1])
            last_beat = beats[-1]
            last = datetime.fromisoformat(last_beat["occurred"])
            window_end = last + timedelta(seconds=10)
            # The window is open and its bucket is in the stored state: now kill the server.
            wait_for(
                lambda: (
                    sql(
                        served,
                        "SELECT snapshot->>'$.state.buckets[0].end' AS e FROM "
                        "automation_state WHERE key = 'evaluator'",
                    )[0]["e"]
                    == format_time(window_end)
                ),
                10,
                "the open window in the stored state",
            )
            assert datetime.now(UTC) < window_end - timedelta(seconds=3)
            served.proc.send_signal(signal.SIGKILL)
            served.proc.wait(timeout=30)
        assert hook.on("/quiet") == []

        with herald_serve(db) as served:
            (call,) = wait_for(lambda: hook.on("/quiet"), 20, "the proactive webhook")
            body = json.loads(call[1])
            assert body["firing"]["kind"] == "triggered"
            assert body["firing"]["triggering_labels"] == {"prefect.resource.id": "app.worker.1"}
            assert body["event"]["id"] == last_beat["id"]
            late = (call[2] - window_end).total_seconds()
            assert 0 <= late < 3, f"fired {late:.2f} s after the window ended"

            def recorded() -> list[dict[str, Any]]:
                out = run_cli(served, "automations", "history", "quiet", "--format", "json")
                assert out.returncode == 0, out.stderr
                firings = json.loads(out.stdout)
                return [f for f in firings if f["action_runs"][0]["status"] == "executed"]

            (firing,) = wait_for(recorded, 10, "the firing in the history")
            assert firing["action_runs"][0]["response_status"] == 204
            events = sql(
                served,
                "SELECT event, count(*) AS n FROM events WHERE "
                "starts_with(event, 'herald.automation.') GROUP BY event",
            )
            counts = {e["event"]: e["n"] for e in events}
            assert counts["herald.automation.triggered"] == 2  # shipped + quiet, once each
            assert counts["herald.automation.created"] == 2
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(timeout=60) == 0
        assert len(hook.on("/quiet")) == 1
        assert len(hook.on("/shipped")) == 1
