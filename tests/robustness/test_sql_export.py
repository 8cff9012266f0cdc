"""``herald sql … --output FILE`` writes every row, online and offline, in bounded memory.

One store of 1M events (built straight into DuckDB, not through ingest) is served by a real
``herald serve`` subprocess, so its RSS, sampled from ``/proc`` during an export, means
something. Offline exports read a checkpointed copy of the same file (the server holds the
original's lock). The 1M-row result is far larger than one 64 MiB gRPC message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import grpc
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.client.local import LocalReader
from collector.client.remote import HeraldClient
from collector.config import QueryConfig
from collector.errors import InvalidSql
from collector.store.duckdb_store import EventStore
from collector.testing import (
    ServedProcess,
    ports_zero,
    running_herald,
    serve_process,
    test_config,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

EVENTS = 1_000_000
SQL_ROW_LIMIT = 1234  # the served store's query.sql_max_rows, set through the environment
# Server RSS may grow this much above its idle level during a 1M-row export. The result is
# ~400 MB as CSV; a server that collected it (as before) grew by more than that.
RSS_GROWTH_BOUND = 250 * 1024 * 1024

# ~350 bytes per event, labels and payloads shaped like the real thing; no newlines in any
# value, so lines in a CSV or JSON Lines file are rows. Recent (the last ~17 minutes): the
# served store's retention must not delete them.
_FILL = """
INSERT INTO events (id, occurred, received, event, resource_id, resource, related, payload, follows)
SELECT uuid(),
       now() - to_microseconds(range * 1000),
       now() - to_microseconds(range * 1000 - 5),
       'app.order.' || (['created', 'paid', 'shipped', 'cancelled'])[range % 4 + 1],
       'app.order.' || range,
       '{{"prefect.resource.id": "app.order.' || range || '", "prefect.resource.name": "Order '
           || range || '", "region": "' || (['eu', 'us', 'ap'])[range % 3 + 1] || '"}}',
       '[{{"prefect.resource.id": "app.customer.' || (range % 977)
           || '", "prefect.resource.role": "customer"}}]',
       '{{"n": ' || range || ', "amount": ' || (range % 1000)
           || '.5, "note": "a customer order with a few words of text in it"}}',
       NULL
FROM range({start}, {stop})
"""


def herald_serve(db: Path, env: dict[str, str]) -> AbstractContextManager[ServedProcess]:
    return serve_process(*ports_zero(db), env=env)


@pytest.fixture(scope="module")
def store_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the served store, a copy for offline reads), each holding ``EVENTS`` events."""
    folder = tmp_path_factory.mktemp("export")
    path = folder / "big.duckdb"
    store = EventStore(path)
    try:
        cur = store.cursor()
        cur.execute(_FILL.format(start=0, stop=EVENTS))
        cur.execute("CHECKPOINT")
        cur.close()
    finally:
        store.close()
    copy = folder / "offline.duckdb"
    shutil.copy(path, copy)
    return path, copy


@pytest.fixture(scope="module")
def served(store_files: tuple[Path, Path]) -> Iterator[ServedProcess]:
    with herald_serve(store_files[0], {"HERALD_QUERY__SQL_MAX_ROWS": str(SQL_ROW_LIMIT)}) as s:
        yield s


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """Samples ``pid``'s RSS every 20 ms while the block runs; yields [peak] (filled at exit)."""
    peak = [vm_rss(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], vm_rss(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def herald_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as f:
        while block := f.read(8 * 1024 * 1024):
            lines += block.count(b"\n")
    return lines


def rows_in(path: Path, fmt: str) -> int:
    """Rows in an exported file, checking its first and last rows are whole."""
    if fmt == "parquet":
        table = pq.read_table(path, columns=["id"])
        assert pc.count_distinct(table.column("id")).as_py() == table.num_rows
        payload = pq.ParquetFile(path).schema.column(7)  # keeps its JSON type
        assert payload.name == "payload" and "logical_type: JSON" in str(payload)
        return int(table.num_rows)  # pyarrow has no hints
    with path.open("rb") as f:
        first = f.readline()
        second = f.readline()
        f.seek(max(0, path.stat().st_size - 4096))
        last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if fmt == "csv":
        assert first.startswith(b'"id","occurred","received","event"')
        assert second.count(b",") >= 8 and last.count(b",") >= 8
        return count_lines(path) - 1  # the header
    assert orjson.loads(first)["event"].startswith("app.order.")
    # JSON columns are embedded as JSON, not quoted as strings
    assert orjson.loads(first)["payload"]["note"].startswith("a customer order")
    assert orjson.loads(last)["resource_id"].startswith("app.order.")
    return count_lines(path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_online_export_writes_every_row_with_bounded_server_memory(
    served: ServedProcess, tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / f"events.{fmt}"
    # warm the server's read path so the baseline includes what any query costs
    assert (
        herald_cli("--address", served.grpc, "sql", "SELECT count(*) FROM events").returncode == 0
    )
    baseline = vm_rss(served.proc.pid)
    with peak_rss(served.proc.pid) as peak:
        result = herald_cli(
            "--address", served.grpc, "sql", "SELECT * FROM events", "-o", str(target)
        )
    assert result.returncode == 0, result.stderr
    assert f"wrote {EVENTS:,} rows to {target}" in result.stderr
    assert rows_in(target, fmt) == EVENTS
    assert peak[0] - baseline < RSS_GROWTH_BOUND, (baseline, peak[0])
    assert "Traceback" not in "".join(served.log)
    target.unlink()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_offline_export_writes_every_row(
    store_files: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "events.out"
    result = herald_cli(
        "sql",
        "SELECT * FROM events",
        "--db",
        str(store_files[1]),
        "-o",
        str(target),
        "--format",
        fmt,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {EVENTS:,} rows" in result.stderr
    assert rows_in(target, fmt) == EVENTS
    assert not target.with_name("events.out.part").exists()
    target.unlink()


def test_terminal_shows_the_servers_row_limit_and_says_how_to_export(served: ServedProcess) -> None:
    # HERALD_QUERY__SQL_MAX_ROWS set where the server runs is the limit; a client's own
    # environment does not change a server setting.
    result = herald_cli(
        "--address",
        served.grpc,
        "sql",
        "SELECT id FROM events",
        "--format",
        "jsonl",
        env={"HERALD_QUERY__SQL_MAX_ROWS": "5"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == SQL_ROW_LIMIT
    assert f"showing the first {SQL_ROW_LIMIT:,} rows" in result.stderr
    assert "--output FILE writes every row" in result.stderr


def test_offline_row_limit_comes_from_the_environment(store_files: tuple[Path, Path]) -> None:
    result = herald_cli(
        "sql",
        "SELECT id FROM events",
        "--db",
        str(store_files[1]),
        "--format",
        "jsonl",
        env={"HERALD_QUERY__SQL_MAX_ROWS": "25"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 25
    assert "showing the first 25 rows" in result.stderr


def test_result_larger_than_one_grpc_message_streams(tmp_path: Path) -> None:
    # ~96 MiB in 96 rows: over the 64 MiB message limit, under the row limit (and under a
    # result byte limit raised for it: the default 32 MiB would cut it).
    sql = "SELECT range AS n, repeat('x', 1024 * 1024) AS blob FROM range(96)"
    config = test_config(tmp_path / "h.duckdb", query={"sql_max_result_bytes": 128 << 20})
    with running_herald(config) as herald:
        with HeraldClient(herald.grpc_address) as client:
            table, truncated = client.sql(sql)
            assert table.num_rows == 96 and not truncated
            assert table.column("blob")[95].as_py() == "x" * 1024 * 1024
            with client.sql_stream(sql, all_rows=True) as stream:
                assert sum(b.num_rows for b in stream) == 96
            # a client that leaves mid-stream ends the server's transaction; the server goes on
            with client.sql_stream(sql, all_rows=True) as stream:
                assert stream.read_next() is not None
            assert client.sql("SELECT 42 AS x")[0].to_pylist() == [{"x": 42}]
            # the unary Sql (kept for API clients) refuses such a result with a reason
            stub = herald_pb2_grpc.HeraldStub(client._channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Sql(herald_pb2.SqlRequest(sql=sql), timeout=60)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "use SqlStream" in (refused.value.details() or "")


def test_export_is_not_cut_by_the_terminal_time_limit(tmp_path: Path) -> None:
    EventStore(tmp_path / "h.duckdb").close()
    config = QueryConfig(sql_timeout_seconds=0.2, sql_export_timeout_seconds=60)
    with LocalReader(str(tmp_path / "h.duckdb"), config) as source:
        with source.sql_stream("SELECT * FROM range(100000)", all_rows=True) as stream:
            rows = 0
            while (batch := stream.read_next()) is not None:
                rows += batch.num_rows
                time.sleep(0.05)  # a slow writer: the export outlasts the terminal limit
        assert rows == 100_000


def test_export_time_limit_stops_a_runaway_export(tmp_path: Path) -> None:
    EventStore(tmp_path / "h.duckdb").close()
    config = QueryConfig(sql_export_timeout_seconds=0.3)
    with LocalReader(str(tmp_path / "h.duckdb"), config) as source:
        with pytest.raises(InvalidSql, match=r"0\.3 s time limit"):
            with source.sql_stream(
                "SELECT sum(a.range * b.range) OVER (ORDER BY a.range ROWS BETWEEN 100000 "
                "PRECEDING AND CURRENT ROW) FROM range(100000) a, range(1000) b",
                all_rows=True,
            ) as stream:
                while stream.read_next() is not None:
                    pass


def test_export_refuses_what_the_terminal_refuses(tmp_path: Path) -> None:
    EventStore(tmp_path / "h.duckdb").close()
    target = tmp_path / "out.csv"
    for sql, message in [
        ("DELETE FROM events", "only read-only queries"),
        ("SELECT * FROM read_csv('/etc/passwd')", "may not read or write files"),
    ]:
        result = herald_cli("sql", sql, "--db", str(tmp_path / "h.duckdb"), "-o", str(target))
        assert result.returncode == 1 and message in result.stderr
        assert "Traceback" not in result.stderr
        assert not target.exists() and not target.with_name("out.csv.part").exists()


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", None])
def test_json_export_times_are_iso_utc_before_and_after_1970(unit: str, tz: str | None) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa

    from cli._export import _json_lines

    times = [
        datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 19, 33, 35, 271_000, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        None,
    ]
    column = pa.array(times, pa.timestamp(unit, tz="UTC")).cast(pa.timestamp(unit, tz=tz))
    batch = pa.record_batch({"t": column})
    lines = [orjson.loads(line)["t"] for line in _json_lines(batch).splitlines()]
    spec = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}[unit]
    expected = [
        None if t is None else t.replace(tzinfo=None).isoformat(timespec=spec) + ("Z" if tz else "")
        for t in times
    ]
    assert lines == expected
