"""Start `herald serve` as a subprocess for benchmarks: temp DB, ports 0, readiness line, RSS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

READY = re.compile(r"herald listening grpc=(\S+) http=(\S+)")


class ServerProcess:
    """A `herald serve` child process with its addresses and an RSS sampler."""

    def __init__(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="herald-bench-")
        self.db = Path(self.dir.name) / "bench.duckdb"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--db", str(self.db),
             "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = READY.search(line)
            if m:
                self.grpc, self.http = m.group(1), m.group(2)
                break
        else:
            raise RuntimeError("herald serve exited before it was ready")
        # Keep draining stderr so the child never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.max_rss_mb = 0.0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        import time

        while self._sampling and self.proc.poll() is None:
            try:
                self.max_rss_mb = max(self.max_rss_mb, self.rss_mb())
            except OSError:
                return
            time.sleep(0.2)

    def stop(self) -> int:
        self._sampling = False
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def count_events(self) -> int:
        import duckdb

        conn = duckdb.connect(str(self.db), read_only=True)
        try:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            conn.close()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.dir.cleanup()
