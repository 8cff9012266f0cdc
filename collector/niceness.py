"""Lower CPU priority for the threads that run user SQL, so that on a busy machine the cores go
first to ingest, the feed and automations (issue 9: eight heavy queries delayed webhooks).

Two kinds of thread: the SQL lane's own (``server/sql_lane.py``), and DuckDB's worker threads,
which run the parallel part of every query and, with heavy SQL running, are busy with it
(measured: eight ``count(*) FROM range(1e12)`` kept DuckDB's one worker at 97 % of a core at
normal priority while the lane's threads were already niced). A niced thread loses nothing
when cores are free; it yields when a normal one wants the core. A writer's or a feed read's
own thread keeps normal priority and runs its own query's tasks, so they never wait on the
niced workers.

Linux only: there ``setpriority(PRIO_PROCESS, tid)`` renices one thread; elsewhere it would
renice the whole process, so nothing is done.
"""

from __future__ import annotations

import os
import sys
import threading

# Linux nice value (0–19, higher = yields more) of user SQL's threads and DuckDB's workers.
SQL_NICENESS = 10

_TASKS = "/proc/self/task"


def lower_priority(tid: int | None = None, niceness: int = SQL_NICENESS) -> None:
    """Renice thread ``tid`` (default: the calling thread); best effort."""
    if sys.platform != "linux" or not niceness:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, tid or threading.get_native_id(), niceness)
    except OSError:
        pass  # a thread that has ended, or a system that refuses: run at normal priority


def native_threads() -> set[int]:
    """Thread ids of this process (empty where ``/proc`` has no task list)."""
    try:
        return {int(name) for name in os.listdir(_TASKS)}
    except OSError:
        return set()


def lower_new_native_threads(before: set[int], niceness: int = SQL_NICENESS) -> int:
    """Renice the threads started since ``before`` (a ``native_threads()`` snapshot) that
    Python did not start — a native library's own threads; returns how many."""
    python_threads = {t.native_id for t in threading.enumerate()}
    started = native_threads() - before - python_threads
    for tid in started:
        lower_priority(tid, niceness)
    return len(started)
