"""The feed's live stream (``GET /live``, Server-Sent Events) against ``herald serve``: it sends
what is committed for its filter, throttled into few messages, and an open stream does not hold
the server at SIGTERM (it is closed at once, not after the grace time)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.testing import ports_zero, serve_process, wait_for

pytestmark = pytest.mark.e2e


def event(name: str, i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": f"live.thing.{i}"},
    }


def test_live_stream_is_throttled_and_ends_at_sigterm(tmp_path: Path) -> None:
    with serve_process(*ports_zero(tmp_path / "h.duckdb")) as served:
        base = f"http://{served.http}"
        messages: list[dict[str, Any]] = []
        opened = threading.Event()

        def read() -> None:
            with httpx.stream("GET", f"{base}/live?event=live.*", timeout=None) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                opened.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        messages.append(orjson.loads(line[6:]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(15)
        # 600 matching events in one commit, 100 others: few messages, the newest rows shown,
        # the rest counted.
        batch = [event("live.tick", i) for i in range(600)] + [
            event("other.tick", i) for i in range(100)
        ]
        httpx.post(f"{base}/api/events", json=batch, timeout=30).raise_for_status()
        wait_for(lambda: sum(m["rows"] + m["skipped"] for m in messages) >= 600, what="all counted")
        assert sum(m["rows"] + m["skipped"] for m in messages) == 600
        assert all(m["rows"] <= 25 for m in messages) and len(messages) <= 3
        assert "other.tick" not in "".join(m["html"] for m in messages)
        # The stream is still open: SIGTERM ends it and the server at once.
        took = served.sigterm(within=30)
        assert took < 4.0, took  # the grace time is 5 s: the stream did not wait it out
        reader.join(10)
        assert not reader.is_alive()
