"""The Prometheus recipe of docs/integrations.md, as written there, run by a real Prometheus
(Debian's ``prometheus`` package) against a real ``herald serve`` with tokens: the scrape
config passes ``promtool check config``, the target comes up with the read token, and the
numbers Prometheus stores are the ones Herald counted. ``promtool check metrics`` lints the
exposition itself.

Only the target address, the token file's path and the scrape interval (15 s → 1 s, so the
test does not wait for the first scrape) are substituted."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.testing import ports_zero, serve_process, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
READ_TOKEN = "prometheus-read-token"
INGEST_TOKEN = "prometheus-ingest-token"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("REQUIRE_PROMETHEUS_TESTS"):
            pytest.fail(f"{name} is not installed (Debian: apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return found


def recipe() -> str:
    """The first YAML block of docs/integrations.md's "### Prometheus" section."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    section = text[text.index("### Prometheus") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None, "no yaml block under ### Prometheus"
    return match.group(1)


def free_port() -> int:
    # Prometheus takes no port 0 it would report back; a port the OS just handed out is free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def prometheus(config: Path, data: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, what="prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def test_the_documented_scrape_config_works_with_a_real_prometheus(tmp_path: Path) -> None:
    binary("prometheus")
    promtool = binary("promtool")
    tokens = json_tokens()
    env = {"HERALD_AUTH__TOKENS": tokens}
    with serve_process(*ports_zero(tmp_path / "h.duckdb"), env=env) as served:
        token_file = tmp_path / "herald-read-token"
        token_file.write_text(READ_TOKEN + "\n")
        config = recipe()
        for documented, actual in [
            ("herald.internal:4318", served.http),
            ("/etc/prometheus/herald-read-token", str(token_file)),
            ("scrape_interval: 15s", "scrape_interval: 1s"),
        ]:
            assert documented in config, documented
            config = config.replace(documented, actual)
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(config)
        checked = subprocess.run(
            [promtool, "check", "config", str(config_file)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        events = [
            {
                "event": "test.scraped",
                "occurred": format_time(datetime.now(UTC)),
                "resource": {"prefect.resource.id": "test.prometheus"},
                "id": uuid7_str(),
            }
            for _ in range(7)
        ]
        reply = httpx.post(
            f"http://{served.http}/api/events",
            json=events,
            headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
            timeout=10,
        )
        assert reply.status_code == 204

        exposition = httpx.get(
            f"http://{served.http}/metrics",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
            timeout=10,
        )
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=exposition.content, capture_output=True
        )
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

        with prometheus(config_file, tmp_path / "tsdb") as url:
            stored = 'herald_items_stored_total{job="herald",signal="events"}'
            found = wait_for(lambda: query(url, stored), timeout=30, what="a scrape")
            assert float(found[0]["value"][1]) == 7
            (up,) = query(url, 'up{job="herald"}')
            assert up["value"][1] == "1"
            (info,) = query(url, "herald_build_info")
            assert info["metric"]["version"]


def json_tokens() -> str:
    return json.dumps(
        [
            {"token": INGEST_TOKEN, "scopes": ["ingest"]},
            {"token": READ_TOKEN, "scopes": ["read"]},
        ]
    )
