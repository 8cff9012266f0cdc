"""The two lines a benchmark prints before its numbers: the exact command that ran it and the
machine it ran on (CPUs, model, RAM, Python, DuckDB, the load average at the start). A figure
without them can be neither re-run nor compared — on this project's shared 2-core machines the
load average says most about how far a number can be trusted."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def command() -> str:
    """The command line as run from the checkout's root."""
    script = Path(sys.argv[0])
    name = f"benchmarks/{script.name}" if script.suffix == ".py" else " ".join(sys.orig_argv)
    return shlex.join([".venv/bin/python", name, *sys.argv[1:]])


def machine() -> str:
    """CPUs, CPU model, RAM, Python and DuckDB versions, load average now."""
    model, mem_gib = "", 0.0
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo.splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024**2
    except OSError:  # not Linux: what platform says is all there is
        pass
    try:
        duckdb = version("duckdb")
    except PackageNotFoundError:
        duckdb = "absent"
    one, five, _ = os.getloadavg()
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({platform.machine()}{', ' + model if model else ''})"
        f", {mem_gib:.1f} GiB RAM, Python {platform.python_version()}, DuckDB {duckdb}; "
        f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    )


def print_header() -> None:
    """Print ``command:`` and ``machine:`` (flushed: the numbers may take minutes)."""
    print(f"command: {command()}")
    print(f"machine: {machine()}", flush=True)
