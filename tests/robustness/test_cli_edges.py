"""The rough edges a new user of the ``herald`` CLI hits (issue 9, items 8 and 9), each against
a real server (port 0) or a real store file, through the real command tree.

* Stored text with control characters (``\\x1b[31m``, NUL, bidi overrides) and rich markup
  (``[bold]``) is escaped in tables and detail views, and exact in ``--format json``.
* ``herald --version``; help without ``<bool>``/``<list[str]>`` placeholders; one meaning per
  short flag across every command.
* ``herald … | head -1`` exits 0 with nothing on stderr, under ``set -o pipefail``.
* ``automations inspect`` prints Prefect's JSON shape (``within`` a number of seconds).
* ``events count --by time --unit minute`` works without ``--since``; ``--by resource`` shows
  the top N (the head of the whole answer) and says how many groups were left out.
* An unreachable server: the CLI hints ``--address``, the SDK ``HERALD_ADDRESS`` — each what
  its user sets.
* The spinner for slow reads draws on a terminal's stderr only.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.filters import parse_filter
from collector.sdk import EventsWorker, emit_event
from collector.store.duckdb_store import EventStore
from collector.store.feed_counts import count_groups

ROOT = Path(__file__).resolve().parents[2]
EVIL_NAME = "app.evil\x1b[31mred\x00[bold]x"
EVIL_RESOURCE = "app.thing\x07\u202eevil"
EVIL_ID = "0193a1b2-0000-7000-8000-00000000e711"
# Characters that must never reach a terminal from stored data.
RAW = ["\x1b", "\x00", "\x07", "\u202e", "\x9b"]

runner = CliRunner()


def cli(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def event(name: str, resource_id: str, when: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event": name,
        "resource": {"prefect.resource.id": resource_id, **extra.pop("labels", {})},
        "related": extra.pop("related", []),
        "payload": extra.pop("payload", {}),
        "occurred": format_time(when),
        **extra,
    }


@pytest.fixture
def loaded(herald: Herald) -> Iterator[str]:
    """A server holding one hostile event and 55 ``app.tick`` events, resource ``app.res.NN``
    having NN of them (1..10), all in the last 10 seconds; yields its gRPC address."""
    now = datetime.now(UTC)
    items = [
        event(
            EVIL_NAME,
            EVIL_RESOURCE,
            now - timedelta(seconds=5),
            id=EVIL_ID,
            labels={"prefect.resource.name": "nm\x1b[2J"},
            related=[{"prefect.resource.id": "x\x1bq", "prefect.resource.role": "r\x00"}],
            payload={"k": "v\x1b\x9b\u202e"},
        )
    ]
    # Resource i gets i events: a strict order, so the top N is known.
    for i in range(1, 11):
        items += [
            event("app.tick", f"app.res.{i:02d}", now - timedelta(seconds=j)) for j in range(i)
        ]
    with HeraldClient(herald.grpc_address) as client:
        accepted, errors = client.emit(items)
    assert (accepted, errors) == (len(items), [])
    yield herald.grpc_address


# ------------------------------------------------------------------------- control characters


def assert_escaped(text: str) -> None:
    for ch in RAW:
        assert ch not in text, (ch, text)


def test_tables_and_details_escape_control_characters_json_keeps_them(loaded: str) -> None:
    a = ["--address", loaded]
    table = cli(*a, "events", "ls", "-f", "table").stdout
    assert_escaped(table)
    assert "app.evil\\x1b[31mred\\x00[bold]x" in table  # markup shown as text, not applied
    assert "\\u202e" in table

    shown = cli(*a, "events", "show", EVIL_ID, "-f", "table").stdout
    assert_escaped(shown)
    assert "app.evil\\x1b[31mred\\x00[bold]x" in shown
    assert "nm\\x1b[2J" in shown and "\\x9b" in shown

    tailed = cli(*a, "events", "tail", "-e", EVIL_NAME, "--count", "1", "-f", "table").stdout
    assert_escaped(tailed)
    assert "app.evil\\x1b[31mred\\x00[bold]x" in tailed and "\\u202e" in tailed

    counted = cli(*a, "events", "count", "--by", "event", "-f", "table").stdout
    assert_escaped(counted)
    assert "\\x1b[31m" in counted

    sql = cli(*a, "sql", "SELECT event, resource_id FROM events WHERE event LIKE 'app.evil%'")
    assert json.loads(sql.stdout)["event"] == EVIL_NAME  # a pipe gets exact JSON Lines
    sql_table = cli(*a, "sql", 'SELECT event AS "col\x1b[1m" FROM events LIMIT 3', "-f", "table")
    assert_escaped(sql_table.stdout)

    exact = json.loads(cli(*a, "events", "ls", "-e", EVIL_NAME, "-f", "json").stdout)
    assert exact[0]["event"] == EVIL_NAME
    assert exact[0]["resource"]["prefect.resource.id"] == EVIL_RESOURCE
    assert exact[0]["payload"] == {"k": "v\x1b\x9b\u202e"}


def test_error_lines_escape_what_they_quote(loaded: str) -> None:
    result = cli("--address", loaded, "events", "show", "\x1b[2Jnot-an-id", code=1)
    assert "\\x1b[2J" in result.stderr
    assert_escaped(result.stderr)


# ------------------------------------------------------------------------- version and help


def test_version_prints_the_package_version() -> None:
    assert cli("--version").stdout.strip() == f"herald {importlib.metadata.version('herald')}"


def _commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def test_help_has_no_type_placeholders_and_short_flags_mean_one_thing() -> None:
    meaning: dict[str, set[str]] = {}
    for path, command in _commands(get_command(app), []):
        help_text = cli(*path, "--help").stdout
        assert "<bool>" not in help_text and "<list[" not in help_text, (path, help_text)
        assert cli(*path, "-h").stdout == help_text
        for param in command.params:
            if param.param_type_name != "option":
                continue
            shorts = [o for o in param.opts if not o.startswith("--")]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meaning.setdefault(short, set()).update(longs)
    assert {k: v for k, v in meaning.items() if len(v) != 1} == {}
    assert meaning["-f"] == {"--format"}
    assert meaning["-o"] == {"--output"}


# ------------------------------------------------------------------------- closed pipes


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file with 20,000 events: far more output than a pipe buffer holds."""
    path = tmp_path_factory.mktemp("pipe") / "h.duckdb"
    store = EventStore(path)
    try:
        store.cursor().execute(
            "INSERT INTO events (id, occurred, received, event, resource_id, resource, "
            "related, payload, follows) SELECT uuid(), now() - INTERVAL (range) SECOND, now(), "
            "'app.thing.happened', 'app.thing.' || (range % 500), "
            "'{\"prefect.resource.id\": \"app.thing.' || (range % 500) || '\"}', '[]', "
            "'{\"n\": ' || range || '}', NULL FROM range(20000)"
        )
    finally:
        store.close()
    return path


@pytest.mark.parametrize(
    "command",
    [
        "events ls -n 5000 --db {db}",
        # rich writes each bar line: a write after the reader left (one big table is one write)
        "events count --by time --unit second --since 15m -f table --db {db}",
        "sql 'SELECT * FROM events' -f csv --db {db}",
    ],
)
def test_piping_into_head_exits_zero_quietly(big_store: Path, command: str) -> None:
    herald = f"{sys.executable} -m cli"
    script = f"set -o pipefail; {herald} {command.format(db=big_store)} | head -1"
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


# ------------------------------------------------------------------------- automations inspect


def test_inspect_prints_prefect_json_shape(herald: Herald) -> None:
    a = ["--address", herald.grpc_address]
    cli(*a, "automations", "create", "--name", "late", "--expect", "app.x", "--within", "10s")
    shown = json.loads(cli(*a, "automations", "inspect", "late").stdout)
    assert shown["trigger"]["within"] == 10.0
    assert shown["name"] == "late" and shown["trigger"]["expect"] == ["app.x"]
    as_yaml = yaml.safe_load(cli(*a, "automations", "inspect", "late", "-f", "yaml").stdout)
    assert as_yaml == shown
    assert "datetime" not in cli(*a, "automations", "inspect", "late").stdout


# ------------------------------------------------------------------------- counting


@pytest.mark.parametrize(
    ("unit", "buckets"), [("second", 60), ("minute", 60), ("hour", 24), ("day", 30)]
)
def test_count_by_time_without_since_fits_the_unit(loaded: str, unit: str, buckets: int) -> None:
    out = cli("--address", loaded, "events", "count", "--by", "time", "--unit", unit, "-f", "json")
    counts = json.loads(out.stdout)
    # The default range is `buckets` buckets back from now (+1: the range rarely aligns).
    assert buckets <= len(counts) <= buckets + 1
    if unit in ("minute", "hour", "day"):  # all 56 events are a few seconds old
        assert sum(c["count"] for c in counts) == 56


def test_count_by_time_with_only_until_counts_before_it(loaded: str) -> None:
    out = cli(
        "--address", loaded, "events", "count", "--by", "time", "--unit", "minute",
        "--interval", "2", "--until", "1h", "-f", "json",
    )  # fmt: skip
    counts = json.loads(out.stdout)
    assert 60 <= len(counts) <= 61 and sum(c["count"] for c in counts) == 0
    end = datetime.fromisoformat(counts[-1]["end_time"])
    assert end <= datetime.now(UTC) - timedelta(minutes=58)


def test_count_by_resource_shows_the_top_n_and_what_was_left_out(loaded: str) -> None:
    a = ["--address", loaded, "events", "count", "--by", "resource", "-f", "json"]
    everything = json.loads(cli(*a, "--limit", "0").stdout)
    assert len(everything) == 11
    top = cli(*a, "-n", "3")
    assert json.loads(top.stdout) == everything[:3]
    assert [c["value"] for c in everything[:3]] == ["app.res.10", "app.res.09", "app.res.08"]
    assert "the top 3 of 11 resources; 8 more left out" in top.stderr
    default = cli(*a[:-2], "-f", "table")
    assert "the top" not in default.stderr  # 11 groups fit in the default 20
    events_top = cli("--address", loaded, "events", "count", "--by", "event", "-n", "1")
    assert json.loads(events_top.stdout)["value"] == "app.tick"
    assert "1 more left out" in events_top.stderr


def test_count_top_is_the_head_of_the_whole_answer_with_ties(tmp_path: Path) -> None:
    """Ties at the cut are broken by label, then id, exactly as in the whole answer, with
    names read from each resource's latest event."""
    store = EventStore(tmp_path / "h.duckdb")
    try:
        cur = store.cursor()
        cur.execute(
            "INSERT INTO events (id, occurred, received, event, resource_id, resource, "
            "related, payload, follows) "
            "SELECT uuid(), now() - INTERVAL (range) SECOND, now(), 'app.e', "
            "'app.r.' || (range % 40), "
            '\'{"prefect.resource.id": "app.r.\' || (range % 40) || \'", '
            '"prefect.resource.name": "\' || chr(CAST(122 - range % 40 % 26 AS INTEGER)) '
            "|| '\"}', "
            "'[]', '{}', NULL FROM range(400 + 7)"
        )
        now = datetime.now(UTC) + timedelta(seconds=1)
        for filter in (None, parse_filter({"resource": {"id_prefix": ["app.r.1"]}})):
            whole = count_groups(cur, filter, "resource", now=now)
            assert whole.groups == len(whole.counts)
            for limit in (1, 5, 7, 8, 9, 20, 100):
                top = count_groups(cur, filter, "resource", now=now, limit=limit)
                assert top.counts == whole.counts[:limit]
                assert top.groups == whole.groups
    finally:
        store.close()


# ------------------------------------------------------------------------- unreachable server


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_cli_unreachable_server_names_the_cli_flag() -> None:
    result = cli("--address", _dead_address(), "events", "ls", code=3)
    assert "no Herald server at" in result.stderr and "--address" in result.stderr


def test_sdk_unreachable_server_names_what_an_sdk_user_sets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HERALD_ADDRESS", _dead_address())
    caplog.set_level(logging.WARNING, logger="collector.sdk")
    from_env = EventsWorker(flush_interval=0.01)
    explicit = EventsWorker(_dead_address(), flush_interval=0.01)
    try:
        # Both give up after their retries (about 3 s), in parallel.
        emit_event("app.x", {"prefect.resource.id": "app.r"}, worker=from_env)
        emit_event("app.x", {"prefect.resource.id": "app.r"}, worker=explicit)
        assert from_env.flush(30) and explicit.flush(30)
    finally:
        from_env.close(5)
        explicit.close(5)
    messages = [r.getMessage() for r in caplog.records if "could not send" in r.getMessage()]
    assert len(messages) == 2, messages
    assert not any("--address" in m for m in messages)
    assert any("HERALD_ADDRESS" in m for m in messages)
    assert any("EventsWorker(address=" in m and "HERALD_ADDRESS" not in m for m in messages)


# ------------------------------------------------------------------------- progress


_SPIN = (
    "import time; from cli._progress import waiting\n"
    "with waiting('counting events', delay=0.05):\n"
    "    time.sleep(0.6)\n"
)


def _run_with_stderr(stderr_fd: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _SPIN],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr_fd,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "80"},
    )


def test_spinner_only_on_a_terminal() -> None:
    master, slave = pty.openpty()
    proc = _run_with_stderr(slave)
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.wait(timeout=30) == 0
    reader.join(timeout=10)
    os.close(master)
    assert b"counting events" in seen

    piped = subprocess.run([sys.executable, "-c", _SPIN], cwd=ROOT, capture_output=True, timeout=30)
    assert (piped.returncode, piped.stderr) == (0, b"")
