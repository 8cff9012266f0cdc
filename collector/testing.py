"""Test support shipped with the package: run a real Herald server, in a thread or a process.

``running_herald(config)`` starts the server on its own event loop in a thread and yields only
after ``start()`` returned (ports bound, store open), so synchronous tests — CliRunner, the OTel
SDK exporters, httpx — talk to a real server. Teardown always calls ``stop()``.

``webhook_receiver()`` is a real HTTP endpoint on 127.0.0.1:0 that records what automations
send it; ``wait_for(check)`` polls a condition (tests wait for conditions, never sleep).

``serve_process(*args)`` runs ``herald serve`` as a child process (end-to-end tests,
benchmarks): it yields once the readiness line names the bound addresses — never after a
sleep — keeps draining stderr into ``log``, and stops the child on exit.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from collector.app import Herald
from collector.config import Config


def test_config(db_path: Path | str, **sections: dict[str, Any]) -> Config:
    """A Config on ``db_path`` with both ports on 127.0.0.1:0, plus section overrides."""
    data: dict[str, Any] = {
        "server": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "storage": {"path": str(db_path)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@contextmanager
def running_herald(config: Config) -> Iterator[Herald]:
    """A started ``Herald`` served from a background event loop; stopped on exit."""
    loop = asyncio.new_event_loop()
    herald = Herald(config)
    thread = threading.Thread(target=loop.run_forever, name="herald-test-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(herald.start(), loop).result(timeout=30)
        yield herald
    finally:
        asyncio.run_coroutine_threadsafe(herald.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# The line `herald serve` logs once both servers listen (cli/serve.py).
READY = re.compile(r"herald listening grpc=(\S+) http=(\S+)")
# The checkout (or site-packages) holding the `cli` and `collector` packages.
_PACKAGES_ROOT = Path(__file__).resolve().parents[1]


def serve_command(*args: str) -> list[str]:
    """The command line of ``herald serve`` with ``args``, run by this interpreter."""
    return [sys.executable, "-m", "cli", "serve", *args]


def ports_zero(db: Path | str, *extra: str) -> tuple[str, ...]:
    """``serve`` arguments for ``db`` with both ports picked by the OS, then ``extra``."""
    return ("--db", str(db), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", *extra)


@dataclass
class ServedProcess:
    """A running ``herald serve`` child: its process, bound addresses and stderr so far."""

    proc: subprocess.Popen[str]
    grpc: str
    http: str
    log: list[str]

    def wait_for_log(self, pattern: str, within: float) -> None:
        """Wait until a stderr line matches ``pattern``; fail if the child exits first."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.log)):
                return
            assert self.proc.poll() is None, "".join(self.log)
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log within {within}s:\n{''.join(self.log)}")

    def sigterm(self, within: float = 60.0) -> float:
        """SIGTERM; returns seconds until the child exited (asserts exit code 0)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit after SIGTERM:\n{''.join(self.log)}") from None
        took = time.monotonic() - start
        assert rc == 0, "".join(self.log)
        return took


@contextmanager
def serve_process(
    *args: str, env: Mapping[str, str] | None = None, stop_within: float = 30.0
) -> Iterator[ServedProcess]:
    """``herald serve *args`` as a child process, yielded once it listens.

    On exit a child still running gets SIGTERM and ``stop_within`` seconds to drain, then
    SIGKILL."""
    proc = subprocess.Popen(
        serve_command(*args),
        cwd=_PACKAGES_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    log: list[str] = []
    for line in stderr:  # the readiness line, not a sleep
        log.append(line)
        if m := READY.search(line):
            break
    else:
        proc.wait()
        stderr.close()
        raise AssertionError(f"herald serve exited before it was ready:\n{''.join(log)}")
    # Keep draining stderr so the child never blocks on a full pipe.
    drain = threading.Thread(target=lambda: log.extend(stderr), daemon=True)
    drain.start()
    try:
        yield ServedProcess(proc, m.group(1), m.group(2), log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_within)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The pipe ends with the child (a grandchild holding it would only delay the close);
        # closed here rather than left to the garbage collector's ResourceWarning.
        drain.join(timeout=5)
        if not drain.is_alive():
            stderr.close()


T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        time.sleep(0.02)


@dataclass
class WebhookReceiver:
    """What a ``webhook_receiver`` has been sent: one record per request, in arrival order
    (``arrived``: ``time.monotonic()`` when the request came in).

    ``delay`` may be changed while it runs (a slow receiver builds up a backlog)."""

    url: str = ""
    port: int = 0
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in list(self.requests)]

    def count(self, path: str | None = None) -> int:
        """How many requests came in (to ``path`` only, if given)."""
        return sum(1 for r in list(self.requests) if path is None or r["path"] == path)

    def since(self, moment: float) -> int:
        """How many requests came in after ``moment`` (``time.monotonic()``)."""
        return sum(1 for r in list(self.requests) if r["arrived"] > moment)


@contextmanager
def webhook_receiver(echo: bool = False, delay: float = 0.0) -> Iterator[WebhookReceiver]:
    """A real HTTP server on 127.0.0.1:0 (its own loop in a thread) recording every request.

    It answers 200 ``ok`` after ``delay`` seconds, or with ``echo`` the request as JSON
    (``{"you_sent": record}``, as httpbin does: the worst case for a recorded response)."""
    found = WebhookReceiver(delay=delay)
    loop = asyncio.new_event_loop()

    async def handle(request: web.Request) -> web.Response:
        arrived = time.monotonic()
        record = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": await request.text(),
        }
        found.requests.append({**record, "arrived": arrived})
        if found.delay:
            await asyncio.sleep(found.delay)
        return web.json_response({"you_sent": record}) if echo else web.Response(text="ok")

    async def start() -> web.AppRunner:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handle)
        # Requests still waiting out a delay when the test ends are not waited for.
        runner = web.AppRunner(application, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        found.port = runner.addresses[0][1]
        found.url = f"http://127.0.0.1:{found.port}"
        return runner

    thread = threading.Thread(target=loop.run_forever, name="webhook-receiver", daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield found
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# --------------------------------------------------------------------------- PostgreSQL

# Where Debian's `postgresql` package puts the server binaries (newest version first);
# POSTGRES_TEST_BIN names another directory holding initdb, pg_ctl, createdb and psql.
_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
# Set by the CI (.ci/run): a missing PostgreSQL fails the tests instead of skipping them. (Not
# HERALD_*: every HERALD_<SECTION>__<KEY> variable is server configuration.)
REQUIRE_POSTGRES_ENV = "REQUIRE_POSTGRES_TESTS"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (``apt-get install postgresql``)."""


def postgres_bin_dir() -> Path:
    """The directory of ``initdb``/``pg_ctl``/``psql``; ``PostgresUnavailable`` if none."""
    override = os.environ.get("POSTGRES_TEST_BIN")
    candidates = [Path(override)] if override else []
    candidates += sorted(
        Path("/").glob(_PG_BIN_GLOB.lstrip("/")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (install Debian's `postgresql` package, or set "
        "POSTGRES_TEST_BIN to the directory holding initdb and pg_ctl)"
    )


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server started by ``postgres_server()``: trust authentication
    for ``user`` on 127.0.0.1:``port`` (TCP only; no password)."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq key=value connection string for ``dbname`` (what ``[storage] catalog``
        takes after ``postgres:``)."""
        return f"dbname={dbname} host={self.host} port={self.port} user={self.user}"

    def catalog(self, dbname: str) -> str:
        """The ``[storage] catalog`` value of a DuckLake catalog in ``dbname``."""
        return f"postgres:{self.dsn(dbname)}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name unless ``name``) and return its name: each
        test gets its own catalog on the one session-wide server."""
        name = name or f"t_{os.urandom(6).hex()}"
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)
        return name

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql (unaligned, tuples only) and return its output."""
        return self._run(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            self.dsn(dbname),
            "-c",
            sql,
        )

    def restart(self) -> None:
        """``pg_ctl restart`` (fast shutdown: every client connection is dropped), same port
        and options; returns once the server accepts connections again."""
        subprocess.run(
            [
                *_as_unprivileged(),
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-l",
                str(self.data_dir.parent / "server.log"),
                "-w",
                "restart",
            ],
            # Not captured: the restarted server would hold the pipe open, and run() wait.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=120,
        )

    def stop(self) -> None:
        """``pg_ctl stop`` (fast): the server is away until the end of ``postgres_server``."""
        subprocess.run(
            [
                *_as_unprivileged(),
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout


def _as_unprivileged() -> list[str]:
    # PostgreSQL refuses to run as root; the test suite often does (containers, CI).
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_server(user: str = "herald", *, durable: bool = False) -> Iterator[PostgresServer]:
    """A real PostgreSQL server in a temporary directory (``initdb`` + ``pg_ctl``, as the
    unprivileged ``nobody`` when running as root) on a free 127.0.0.1 port, stopped and
    removed on exit. fsync is off unless ``durable`` (benchmarks: commits cost what they cost
    in production): a test's catalog need not survive a machine crash (the tests kill
    collectors, never the catalog server). ``PostgresUnavailable`` without the binaries."""
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    data = root / "data"
    runas = _as_unprivileged()
    if runas:
        os.chown(root, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    try:
        subprocess.run(
            [
                *runas,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = 0
        for _attempt in range(5):  # a port picked free may be taken before postgres binds it
            port = _free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c max_connections=200"
            )
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = subprocess.run(
                [
                    *runas,
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                capture_output=True,
                timeout=120,
            )
            if started.returncode == 0:
                break
        else:
            log = (root / "server.log").read_text(errors="replace")
            raise AssertionError(f"PostgreSQL did not start:\n{log}")
        try:
            yield PostgresServer("127.0.0.1", port, user, bin_dir, data)
        finally:
            subprocess.run(
                [*runas, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
