"""``--db PATH`` on files that are not (whole) Herald stores: one clear line and a non-zero
exit for ``events ls|count|show`` and ``sql``, never a traceback.

The files are real DuckDB files built the way users get them: a database of some other tool,
an empty one, a Herald store copied while the server ran (its ``.wal`` left behind), a text
file, a path that does not exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.store.duckdb_store import EventStore

ROOT = Path(__file__).resolve().parents[2]
SOME_ID = "0190f1b2-0000-7000-8000-000000000000"

COMMANDS: list[list[str]] = [
    ["events", "ls"],
    ["events", "count"],
    ["events", "show", SOME_ID],
    ["sql", "SELECT count(*) FROM events"],
]

_INSERT = (
    "INSERT INTO events (id, occurred, received, event, resource_id, resource, related, "
    "payload, follows) SELECT uuid(), now(), now(), 'app.thing.happened', 'app.thing.' || range, "
    "'{{\"prefect.resource.id\": \"app.thing\"}}', '[]', '{{}}', NULL FROM range({n})"
)


def other_tool_db(tmp_path: Path) -> Path:
    path = tmp_path / "other.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE measurements (taken TIMESTAMP, value DOUBLE)")
    conn.execute("INSERT INTO measurements VALUES (now(), 1.5)")
    conn.close()
    return path


def empty_db(tmp_path: Path) -> Path:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    return path


def store_copied_without_wal(tmp_path: Path) -> Path:
    """A young store whose tables and events are still only in its WAL when it is copied
    (what ``cp herald.duckdb`` gives while the server runs and has not checkpointed)."""
    store = EventStore(tmp_path / "live.duckdb")
    try:
        store.cursor().execute(_INSERT.format(n=10))
        assert (tmp_path / "live.duckdb.wal").stat().st_size > 0
        copy = tmp_path / "copy.duckdb"
        shutil.copy(tmp_path / "live.duckdb", copy)
    finally:
        store.close()
    return copy


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.duckdb"
    path.write_text("not a database\n")
    return path


def missing_file(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.duckdb"


FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "other-tool": (other_tool_db, "is not a Herald store"),
    "empty": (empty_db, "is not a Herald store"),
    "copied-without-wal": (store_copied_without_wal, "copy its .wal file"),
    "text-file": (text_file, "not a valid DuckDB database"),
    "missing": (missing_file, "does not exist"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("kind", list(FILES))
def test_db_that_is_not_a_herald_store_is_one_line(
    tmp_path: Path, kind: str, command: list[str]
) -> None:
    make, message = FILES[kind]
    path = make(tmp_path)
    result = CliRunner().invoke(app, [*command, "--db", str(path)])
    # A handled error is a SystemExit with the mapped code; anything else escaped.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herald: store error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output and "Catalog" not in result.output
    assert result.stdout == ""


def test_db_errors_are_one_line_from_the_real_command(tmp_path: Path) -> None:
    # The real entry point (Rich tracebacks are installed by Typer there, not in CliRunner).
    path = other_tool_db(tmp_path)
    for command in COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "cli", *command, "--db", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert result.returncode == 4, result.stderr
        assert "Traceback" not in result.stderr and "CatalogException" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"herald: store error: {path} is not a Herald store (no event_resources, events, "
            "herald_schema tables); if it is a copy of one, copy its .wal file with it"
        ]


def test_copy_with_checkpointed_tables_reads_what_the_file_holds(tmp_path: Path) -> None:
    # Once the server has checkpointed, the file has the tables; a copy without the WAL is a
    # valid (older) store: it reads without error and holds the checkpointed events only.
    store = EventStore(tmp_path / "live.duckdb")
    try:
        store.cursor().execute(_INSERT.format(n=10))
        store.cursor().execute("CHECKPOINT")
        store.cursor().execute(_INSERT.format(n=5))
        copy = tmp_path / "copy.duckdb"
        shutil.copy(tmp_path / "live.duckdb", copy)
    finally:
        store.close()
    result = CliRunner().invoke(
        app, ["sql", "SELECT count(*) AS n FROM events", "--db", str(copy), "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == '{"n":10}' or result.stdout.strip() == '{"n": 10}'
    for command in (["events", "ls"], ["events", "count"], ["events", "show", SOME_ID]):
        result = CliRunner().invoke(app, [*command, "--db", str(copy), "--format", "jsonl"])
        assert "Traceback" not in result.output
        # `show` of an id that is not there is NotFound (exit 1), the others succeed
        assert result.exit_code == (1 if command[1] == "show" else 0), result.output


def test_store_of_an_older_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    EventStore(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("DELETE FROM herald_schema WHERE version > 1")
    conn.close()
    result = CliRunner().invoke(app, ["events", "ls", "--db", str(path)])
    assert result.exit_code == 4
    assert "has Herald schema version 1" in result.stderr
    assert "herald serve" in result.stderr
