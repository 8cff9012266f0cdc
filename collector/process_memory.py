"""The C allocator's share of the server's memory budget (glibc only; elsewhere a no-op).

Measured under the overload soak (benchmarks/soak_memory.py, docs/benchmarks.md): with glibc's
defaults, the memory that Python, grpc and Arrow free is kept by the allocator, not returned —

* every thread that allocates under contention gets an arena of its own (up to 8 per core),
  and each keeps its high-water mark: the writer thread building Arrow batches, gRPC's
  threads, the event loop; together 100–250 MB of RSS beyond what was in use;
* the main arena's free chunks sat at 60–120 MB while 50–80 MB were in use;
* pyarrow's own allocator (mimalloc) kept the pages of the writer's freed Arrow batches.

So ``herald serve`` gives Arrow the C allocator, caps the arenas at ``ARENAS`` and fixes the
mmap threshold (before the server's threads start), and the writer hands free pages back
(``release_free_memory``, ``malloc_trim``) after each checkpoint — the moment a group of large
batches has just been let go. The embedded exporter (collector/otel) runs in someone else's
process: it leaves the allocators' settings alone (its writer's trim after a checkpoint is the
only call made there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

import pyarrow as pa

# glibc's mallopt parameters (malloc.h).
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
# Allocations from this size up get pages of their own, returned to the system when freed
# (request bodies, protobuf and Arrow buffers). glibc's default starts at 128 KiB but rises
# with every such block freed, up to 32 MiB, after which they are carved from the heap and
# strand it (fragmentation); fixing it keeps it where it starts.
MMAP_THRESHOLD = 128 * 1024
# Two arenas: the event loop and the writer, the two threads that allocate most, rarely wait
# for each other's lock; more only kept more freed memory.
ARENAS = 2


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018  # musl has no malloc_trim: not glibc then
        libc.mallopt  # noqa: B018  # the same for mallopt
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocators(arenas: int = ARENAS) -> bool:
    """Arrow's buffers from the C allocator; glibc's arenas capped and its mmap threshold fixed,
    for the rest of the process: call before threads start. True if glibc was tuned."""
    # pyarrow's default pool (mimalloc) keeps the pages of freed buffers for reuse: under the
    # soak it held the high-water mark of the writer's Arrow batches. From malloc, a batch's
    # buffers (past MMAP_THRESHOLD) are returned when it is freed.
    pa.set_memory_pool(pa.system_memory_pool())
    libc = _glibc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(_M_ARENA_MAX, arenas) and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )


def release_free_memory() -> bool:
    """Give the allocator's free pages back to the system (``malloc_trim(0)``: every arena,
    free pages in the middle of the heap included). True if some memory was released."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
