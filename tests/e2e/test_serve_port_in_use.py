"""`herald serve` on a port that is taken (issue 9): exit 2 with one line naming the address,
the config key and the flag; no raw gRPC C-core log line; no DuckDB file created. A start that
fails after binding gives its ports back; TLS files are checked before anything is bound, and
TLS serves on the pre-bound sockets."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.errors import StoreError
from collector.testing import ports_zero, serve_command, serve_process, test_config

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
        port: int = sock.getsockname()[1]
        return port


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


def test_unusable_tls_files_are_one_clear_line_before_anything_is_bound(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    tls = ("--config", str(tmp_path / "tls.toml"))
    (tmp_path / "tls.toml").write_text(f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n')
    result = serve(db, "127.0.0.1:0", "127.0.0.1:0", *tls)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "(tls.cert_file, tls.key_file) are not a PEM certificate" in result.stderr
    assert not C_CORE_LOG.search(result.stderr)
    assert no_store_files(tmp_path) == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_serves_both_ports_from_the_pre_bound_sockets(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    env = {"HERALD_TLS__CERT_FILE": str(cert), "HERALD_TLS__KEY_FILE": str(key)}
    with serve_process(*ports_zero(tmp_path / "tls.duckdb"), env=env) as served:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(served.grpc, credentials) as channel:
            reply = herald_pb2_grpc.HeraldStub(channel).Emit(
                herald_pb2.EmitRequest(
                    events_json=b'[{"event": "tls.ok", "resource": {"prefect.resource.id": "t"}}]'
                ),
                timeout=30,
            )
        assert reply.accepted == 1
        answer = httpx.post(
            f"https://{served.http}/api/events",
            json=[{"event": "tls.ok", "resource": {"prefect.resource.id": "t"}}],
            verify=ssl.create_default_context(cafile=str(cert)),
        )
        assert answer.status_code == 204
        served.sigterm()
