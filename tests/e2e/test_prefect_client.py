"""The real ``prefect`` package (3.x) against a real ``herald serve``: ``emit_event`` through
Prefect's websocket, reading events back with Prefect's client (``/api/events/filter`` and its
next pages), ``prefect events stream``, and ``prefect automation ls|inspect|pause|resume|
delete|create|update`` and ``Automation.read(...).update()`` — all with ``PREFECT_API_URL``
pointed at Herald and Herald's token given as Prefect's auth string
(``PREFECT_API_AUTH_STRING=herald:<token>``).

Prefect lives in a virtualenv of its own, built by ``prefect_python()`` and cached under
``.cache/`` (gitignored): ``prefect==3.9.1`` pins ``certifi>=2026.10.19``, which the package
index here does not have, so the package is installed with ``--no-deps`` and then the
requirements its metadata names, with that pin relaxed. A fresh build takes about 10-20 s with
uv (a dev dependency), about two minutes with pip.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.testing import ServedProcess, ports_zero, serve_process, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PREFECT_VERSION = "3.9.1"
CACHE = ROOT / ".cache"
VENV = CACHE / f"prefect-{PREFECT_VERSION}"
# Pins the package index cannot satisfy, relaxed to the bare name (see the module docstring).
RELAXED = ("certifi",)
TOKEN = "prefect-client-admin-token"


def _requirements(metadata: str) -> list[str]:
    """A distribution's unconditional requirements (no extras), ``RELAXED`` pins dropped."""
    out = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: ") or "extra ==" in line:
            continue
        requirement = line.removeprefix("Requires-Dist: ").strip()
        project = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
        out.append(project if project.lower() in RELAXED else requirement)
    return out


def _installer(python: Path) -> list[str]:
    """``uv pip … --python <venv>`` (a dev dependency: about 10 s for Prefect's hundred
    packages), else the venv's own pip (about two minutes)."""
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        # --native-tls: the system's CA store, as pip uses here (pip.conf names it).
        return [
            str(uv),
            "pip",
            "install",
            "-q",
            "--native-tls",
            "--compile-bytecode",
            "--python",
            str(python),
        ]
    return [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install"]


def prefect_python() -> Path:
    """The cached virtualenv's python with ``prefect==PREFECT_VERSION``; built once (under a
    file lock, so parallel sessions build it once too)."""
    CACHE.mkdir(exist_ok=True)
    python = VENV / "bin" / "python"
    stamp = VENV / ".complete"
    with (CACHE / "prefect-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return python
        shutil.rmtree(VENV, ignore_errors=True)  # a build that was interrupted
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        install = _installer(python)
        # The package alone first: its metadata names what it needs, one pin relaxed.
        subprocess.run(
            [*install, "--no-deps", f"prefect=={PREFECT_VERSION}"], check=True, timeout=600
        )
        (metadata,) = VENV.glob(f"lib/python*/site-packages/prefect-{PREFECT_VERSION}.dist-info")
        requirements = VENV / "requirements.txt"
        needs = _requirements((metadata / "METADATA").read_text())
        requirements.write_text("\n".join(needs) + "\n")
        subprocess.run([*install, "-r", str(requirements)], check=True, timeout=900)
        stamp.write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return python


@pytest.fixture(scope="module")
def prefect() -> Path:
    return prefect_python()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    db = tmp_path_factory.mktemp("prefect-client") / "herald.duckdb"
    env = {"HERALD_AUTH__TOKENS": json.dumps([{"token": TOKEN, "scopes": ["admin"]}])}
    with serve_process(*ports_zero(db), env=env) as proc:
        yield proc


def prefect_env(served: ServedProcess, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HERALD_"))}
    env.update(
        PREFECT_API_URL=f"http://{served.http}/api",
        PREFECT_API_AUTH_STRING=f"herald:{TOKEN}",
        PREFECT_HOME=str(home),
        # No ephemeral server, no telemetry, no update check: only Herald answers.
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false",
        DO_NOT_TRACK="1",
        COLUMNS="200",
    )
    return env


def run_prefect(
    prefect: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(prefect.parent / "prefect"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def herald_api(served: ServedProcess) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{served.http}/api",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )


EMIT_AND_READ = textwrap.dedent(
    """
    import json
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.events.worker import EventsWorker

    emitted = [
        emit_event(
            "test.prefect.emitted",
            resource={"prefect.resource.id": f"prefect.test.{i}", "prefect.resource.name": "t"},
            related=[{"prefect.resource.id": "prefect.tag.x", "prefect.resource.role": "tag"}],
            payload={"i": i},
        )
        for i in range(5)
    ]
    # Returns once the worker's queue is sent and confirmed (a websocket ping/pong).
    EventsWorker.drain_all()
    with get_client(sync_client=True) as client:
        flt = EventFilter(event=EventNameFilter(prefix=["test.prefect."]))
        page = client.read_events(flt, limit=2)
        read, total = [e.model_dump(mode="json") for e in page.events], page.total
        while page.next_page:
            page = client.read_events_page(page.next_page)
            read += [e.model_dump(mode="json") for e in page.events]
    print(json.dumps({"emitted": [str(e.id) for e in emitted], "read": read, "total": total}))
    """
)


def test_emit_event_and_read_events_with_the_prefect_client(
    prefect: Path, served: ServedProcess, tmp_path: Path
) -> None:
    env = prefect_env(served, tmp_path)
    done = subprocess.run(
        [str(prefect), "-c", EMIT_AND_READ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Error emitting event" not in done.stderr, done.stderr
    # Acknowledged = committed: read at once, no polling; every one, in newest-first pages.
    assert result["total"] == 5
    assert sorted(e["id"] for e in result["read"]) == sorted(result["emitted"])
    first = next(e for e in result["read"] if e["resource"]["prefect.resource.id"].endswith(".0"))
    assert first["payload"] == {"i": 0} and first["received"]
    assert first["related"] == [
        {"prefect.resource.id": "prefect.tag.x", "prefect.resource.role": "tag"}
    ]


def test_prefect_events_stream(prefect: Path, served: ServedProcess, tmp_path: Path) -> None:
    env = prefect_env(served, tmp_path)
    stream = subprocess.Popen(
        [str(prefect.parent / "prefect"), "events", "stream", "--format", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert stream.stdout is not None
    out = stream.stdout
    reader = threading.Thread(target=lambda: lines.extend(out), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Subscribing" in line for line in lines), timeout=60)
        seen: list[str] = []
        with herald_api(served) as api:

            def streamed() -> bool:
                # Posted until the stream shows one: the subscription starts a moment after
                # "Subscribing…" is printed (the websocket handshake and the filter).
                event = {"event": "test.stream.live", "resource": {"prefect.resource.id": "s"}}
                assert api.post("/events", json=[event]).status_code == 204
                seen[:] = [
                    json.loads(line)["event"]
                    for line in list(lines)
                    if line.startswith("{") and "test.stream.live" in line
                ]
                return bool(seen)

            wait_for(streamed, timeout=60)
        assert set(seen) == {"test.stream.live"}
    finally:
        stream.terminate()
        stream.wait(timeout=30)
        out.close()


def test_prefect_automation_commands(prefect: Path, served: ServedProcess, tmp_path: Path) -> None:
    env = prefect_env(served, tmp_path)
    body: dict[str, Any] = {
        "name": "prefect-cli",
        "description": "made by the test",
        "trigger": {"type": "event", "expect": ["test.cli.*"], "posture": "Reactive"},
        "actions": [
            {"type": "call-webhook", "url": "http://127.0.0.1:9/hook"},
            {"type": "do-nothing"},
        ],
    }
    with herald_api(served) as api:
        created = api.post("/automations/", json=body)
        assert created.status_code == 201, created.text
        aid = created.json()["id"]

        listed = run_prefect(prefect, env, "automation", "ls").stdout
        assert "prefect-cli" in listed and "Call webhook" in listed and "Do nothing" in listed
        assert "Reactive: expecting 1 of" in listed

        # By name: a list (names are not unique), as Prefect's CLI prints it.
        [inspected] = json.loads(
            run_prefect(prefect, env, "automation", "inspect", "prefect-cli", "--json").stdout
        )
        assert inspected["id"] == aid and inspected["description"] == "made by the test"

        paused = run_prefect(prefect, env, "automation", "pause", "prefect-cli").stdout
        assert "Paused automation" in paused and aid in paused
        assert api.get(f"/automations/{aid}").json()["enabled"] is False

        resumed = run_prefect(prefect, env, "automation", "resume", "--id", aid).stdout
        assert "Resumed automation with id" in resumed
        assert api.get(f"/automations/{aid}").json()["enabled"] is True

        # A PUT from Prefect's client (a compound trigger), read back through Herald's API.
        compound = {
            "name": "prefect-cli",
            "trigger": {
                "type": "compound",
                "require": "all",
                "within": 120,
                "triggers": [
                    {"type": "event", "expect": ["a.b"]},
                    {"type": "event", "expect": ["c.d"]},
                ],
            },
            "actions": [{"type": "do-nothing"}],
        }
        updated = run_prefect(
            prefect, env, "automation", "update", "--id", aid, "--from-json", json.dumps(compound)
        ).stdout
        assert "Updated automation 'prefect-cli'" in updated
        now = api.get(f"/automations/{aid}").json()
        assert now["trigger"]["type"] == "compound" and now["actions"] == [{"type": "do-nothing"}]

        deleted = run_prefect(prefect, env, "automation", "delete", "prefect-cli").stdout
        assert "Deleted automation with name 'prefect-cli'" in deleted
        assert api.get(f"/automations/{aid}").status_code == 404

        # An automation with a Prefect action type Herald lacks: the type is named.
        prefect_only = {**body, "actions": [{"type": "pause-work-pool", "source": "inferred"}]}
        failed = run_prefect(
            prefect,
            env,
            "automation",
            "create",
            "--from-json",
            json.dumps(prefect_only),
            check=False,
        )
        assert failed.returncode != 0
        assert "pause-work-pool" in failed.stdout + failed.stderr
        assert api.post("/automations/filter", json={}).json() == []


UPDATE_WITH_THE_CLIENT = textwrap.dedent(
    """
    import json, sys
    from prefect.automations import Automation

    auto = Automation.read(id=sys.argv[1])
    auto.name = "renamed by prefect"
    auto.update()
    # What the client held (and so PUT): its action models, without Herald's extra keys.
    print(json.dumps(auto.model_dump(mode="json")["actions"]))
    """
)


def test_prefect_update_keeps_herald_actions(
    prefect: Path, served: ServedProcess, tmp_path: Path
) -> None:
    """``Automation.read(...).update()`` sends back what Prefect's models kept of Herald's
    ``call-webhook``/``emit-event``/``run-command``; the stored actions survive it."""
    env = prefect_env(served, tmp_path)
    body = {
        "name": "prefect-update",
        "trigger": {"type": "event", "expect": ["test.update.*"], "posture": "Reactive"},
        "actions": [
            {
                "type": "call-webhook",
                "url": "http://127.0.0.1:9/hook",
                "headers": {"Authorization": "Bearer e2e-hook-secret"},
                "body": "{{ event.event }}",
            },
            {"type": "emit-event", "event": "x.y", "resource": {"prefect.resource.id": "r"}},
            {"type": "run-command", "argv": ["true"]},
            {"type": "pause-automation", "source": "inferred"},
        ],
    }
    with herald_api(served) as api:
        created = api.post("/automations/", json=body)
        assert created.status_code == 201, created.text
        aid = created.json()["id"]
        reveal = {"reveal_secrets": "true"}
        before = api.get(f"/automations/{aid}", params=reveal).json()
        done = subprocess.run(
            [str(prefect), "-c", UPDATE_WITH_THE_CLIENT, aid],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        held = json.loads(done.stdout.strip().splitlines()[-1])
        # The premise: the client dropped the URL and turned emit-event into a bare do-nothing.
        assert "url" not in held[0] and held[1] == {"type": "do-nothing"}
        after = api.get(f"/automations/{aid}", params=reveal).json()
        assert after["name"] == "renamed by prefect"
        assert after["actions"] == before["actions"]
        assert api.delete(f"/automations/{aid}").status_code == 204
