"""`herald serve` on a port that is taken (issue 9): exit 2 with one line naming the address,
the config key and the flag; no raw gRPC C-core log line; no DuckDB file created. And a start
that fails after binding gives its ports back."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app import Herald
from collector.errors import StoreError
from collector.testing import serve_command, test_config

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# C-core's log format: severity letter, MMDD, time, thread, file:line]
C_CORE_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def serve(db: Path, grpc: str, http: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command("--db", str(db), "--grpc", grpc, "--http", http, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr  # a config error
    lines = result.stderr.splitlines()
    assert lines == [f"herald: config error: {expected}"], result.stderr
    assert not C_CORE_LOG.search(result.stderr)
    assert "Traceback" not in result.stderr


def no_store_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.iterdir() if p.name.startswith("store.duckdb"))


def test_grpc_port_in_use(tmp_path: Path, taken_port: int) -> None:
    db = tmp_path / "store.duckdb"
    result = serve(db, f"127.0.0.1:{taken_port}", "127.0.0.1:0")
    assert_one_clear_line(
        result,
        f"cannot listen on 127.0.0.1:{taken_port} for gRPC (server.grpc, --grpc): "
        "address already in use",
    )
    assert no_store_files(tmp_path) == []


def test_http_port_in_use(tmp_path: Path, taken_port: int) -> None:
    db = tmp_path / "store.duckdb"
    result = serve(db, "127.0.0.1:0", f"127.0.0.1:{taken_port}")
    assert_one_clear_line(
        result,
        f"cannot listen on 127.0.0.1:{taken_port} for HTTP (server.http, --http): "
        "address already in use",
    )
    assert no_store_files(tmp_path) == []


def test_an_unresolvable_host_is_one_clear_line(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    result = serve(db, "127.0.0.1:0", "no-such-host.invalid:0", "--insecure")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "herald: config error: cannot listen on no-such-host.invalid:0 for HTTP "
        "(server.http, --http): cannot resolve the host"
    ), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert no_store_files(tmp_path) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_a_start_that_fails_after_binding_gives_both_ports_back(tmp_path: Path) -> None:
    """The store is opened after both ports are bound; when it cannot be (not a DuckDB file),
    the ports the failed start bound are free again."""
    db = tmp_path / "not-a-store.duckdb"
    db.write_bytes(b"this is not a DuckDB file" * 1000)
    grpc_port, http_port = free_port(), free_port()
    config = test_config(
        db, server={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"}
    )
    with pytest.raises(StoreError):
        asyncio.run(Herald(config).start())
    assert can_bind(grpc_port), "the failed start kept the gRPC port"
    assert can_bind(http_port), "the failed start kept the HTTP port"
