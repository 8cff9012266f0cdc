"""CPU per span in the server's process for OTLP ingest, with and without mapping workers
(``ingest.mapping_workers``, issue 13): CPU time, not wall time, so the figures hold on a
shared, loaded machine.

    .venv/bin/python benchmarks/otlp_workers.py [--requests 60] [--workers 2] [--inflight 8]

The requests are ``benchmarks/ingest_otlp.py``'s 512-span trace requests (new ids each).

* **in-process**: what the server's process does per request with ``mapping_workers = 0``:
  decode the protobuf, map (``traces_to_events``), build the writer's Arrow batch
  (``columns_to_arrow``) — thread CPU time of this one thread.
* **workers**: what it does with ``mapping_workers = N``: hand the body to the pool, read the
  Arrow IPC answer, stamp ``received``, and read the columns the automations read of every
  committed event (ids, names, times, follows: ``ArrowColumns``) — this process's CPU time
  (all its threads: the pool's feeder and result threads included; the workers' own CPU is
  printed apart).
* **insert**: the part both paths share — ``EventStore.append`` of those batches into a DuckDB
  file (process CPU time, DuckDB's threads included), once with every batch in the same time
  window (what ``ingest_otlp.py``'s clients send: one template, fixed times) and once with
  each batch's times moved on, as live traffic has them. The dedupe check reads the stored
  events in the batch's time window, so the first grows with the store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks.ingest_otlp import ITEMS, trace_template
from collector.clock import now_us
from collector.domain.events import Limits
from collector.mapping.otlp_decode import map_export
from collector.pipeline.otlp_workers import MappingPool
from collector.store.arrow_batch import ArrowColumns, columns_to_arrow, stamp_received
from collector.store.duckdb_store import EventStore


def bodies(n: int) -> list[bytes]:
    rng = random.Random(7)
    suffix = rng.randbytes(8)
    template = trace_template(rng, suffix, 0)
    return [template.replace(suffix, i.to_bytes(8, "big")) for i in range(1, n + 1)]


def in_process(requests: list[bytes], limits: Limits) -> tuple[float, list[pa.Table]]:
    tables = []
    started = time.thread_time()
    for body in requests:
        received = now_us()
        result = map_export("traces", body, received, limits)
        tables.append(columns_to_arrow(result.columns, [received] * len(result.columns)))
    return time.thread_time() - started, tables


def children_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def through_workers(
    requests: list[bytes], limits: Limits, workers: int, inflight: int
) -> tuple[float, float, list[pa.Table]]:
    pool = MappingPool(workers, columns_to_arrow, max_queued_bytes=1 << 30)
    await asyncio.to_thread(pool.start)
    pids = pool.worker_pids()
    gate = asyncio.Semaphore(inflight)

    async def one(body: bytes) -> pa.Table:
        async with gate:
            mapped = await pool.map("traces", body, now_us(), limits)
        table = stamp_received(mapped.table(), now_us())
        cols = ArrowColumns(table)
        cols.ids, cols.names, cols.occurred_us, cols.follows  # noqa: B018  # what automations read
        return table

    workers0 = children_cpu(pids)
    started = time.process_time()
    tables = await asyncio.gather(*(one(body) for body in requests))
    main_cpu = time.process_time() - started
    workers_cpu = children_cpu(pids) - workers0
    await asyncio.to_thread(pool.close)
    return main_cpu, workers_cpu, list(tables)


def shifted(table: pa.Table, by_us: int) -> pa.Table:
    """``table`` with its ``occurred`` moved ``by_us`` later (a later request's spans)."""
    i = table.schema.get_field_index("occurred")
    occurred = pc.add(table.column(i).cast(pa.int64()), by_us).cast(table.schema.field(i).type)
    return table.set_column(i, "occurred", occurred)


def insert(tables: list[pa.Table], advancing: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="herald-bench-workers-") as tmp:
        store = EventStore(Path(tmp) / "bench.duckdb")
        try:
            started = time.process_time()
            for k, table in enumerate(tables):
                store.append(shifted(table, k * 1_000_000) if advancing else table)
            return time.process_time() - started
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="512-span requests per path")
    parser.add_argument("--workers", type=int, default=2, help="mapping worker processes")
    parser.add_argument("--inflight", type=int, default=8, help="requests in the pool at once")
    args = parser.parse_args()
    print_header()
    print(f"{args.requests} requests of {ITEMS} spans")
    requests = bodies(args.requests)
    limits = Limits()
    spans = args.requests * ITEMS
    cpu, tables = in_process(requests, limits)
    print(f"in-process, server CPU per span:      {cpu / spans * 1e6:6.2f} µs")
    main_cpu, workers_cpu, worker_tables = asyncio.run(
        through_workers(requests, limits, args.workers, args.inflight)
    )
    assert sum(t.num_rows for t in worker_tables) == sum(t.num_rows for t in tables)
    print(f"workers={args.workers}, server CPU per span:   {main_cpu / spans * 1e6:6.2f} µs")
    print(f"workers={args.workers}, workers' CPU per span: {workers_cpu / spans * 1e6:6.2f} µs")
    for advancing in (False, True):
        cpu = insert(tables, advancing)
        window = "times moving on     " if advancing else "one time window     "
        print(f"insert + dedupe, {window} CPU per span: {cpu / spans * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
