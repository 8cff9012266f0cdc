"""`herald serve` as a child process for benchmarks: a DuckDB file (temporary unless given),
ports 0, addresses from the readiness line, stderr kept, RSS sampled, CPU time readable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"herald listening grpc=(\S+) http=(\S+)")


class ServerProcess:
    """A running `herald serve`; ``stop()`` sends SIGTERM and waits for the drain."""

    def __init__(
        self, *extra: str, db: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if db is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="herald-bench-")
            db = Path(self._tmp.name) / "bench.duckdb"
        self.db = db
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "serve",
                "--db",
                str(self.db),
                "--grpc",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                *extra,
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            if m := READY.search(line):
                self.grpc, self.http = m.group(1), m.group(2)
                break
        else:
            raise RuntimeError("herald serve exited before it was ready:\n" + "".join(self.log))
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.max_rss_mb = 0.0
        self._sampling = True
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample_rss(self) -> None:
        while self._sampling and self.proc.poll() is None:
            try:
                self.max_rss_mb = max(self.max_rss_mb, self.rss_mb())
            except OSError:
                return
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def descendants(self) -> list[int]:
        """Process ids below the server (its OTLP mapping workers and their forkserver)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def descendants_cpu_seconds(self) -> float:
        """CPU time of the processes below the server, alive now (sample before they exit)."""
        total = 0
        for pid in self.descendants():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        """SIGTERM: the server drains its queue, commits and exits."""
        self._sampling = False
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def count_events(self) -> int:
        import duckdb

        conn = duckdb.connect(str(self.db), read_only=True)
        try:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.close()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
