"""The writer's cost per event: CPU time of ``EventStore.append`` (one group commit: the
dedupe ``INSERT`` and, since schema version 3, the filters' side tables) on batches shaped like
ingest's, with no server, clients or network around it — the least noisy measure of what the
store adds to ingest on a shared machine.

    .venv/bin/python benchmarks/append_cost.py --batches 200 --batch 1000

Events: ``app.<service>.<verb>`` with 2–3 labels that follow from their resource (2,000 of
them; ``--labels-per-event`` draws them anew for every event) and 0–3 related items (customer,
tenant, flow), and OTLP-like spans whose only related item is their trace (one trace per 10
spans). The store starts empty in a temp directory; CPU time is
``time.process_time`` (every thread of the process: DuckDB's too) around ``append`` alone.
To compare two versions of the code, run this file from each checkout, alternately.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.store.duckdb_store import EventStore, columns_to_arrow

SERVICES = ["checkout", "payments", "inventory", "shipping", "search", "auth"]
VERBS = ["created", "updated", "failed", "completed"]


def batch(
    rng: random.Random, n: int, now_us: int, *, labels_per_event: bool = False
) -> EventColumns:
    cols = EventColumns()
    trace = uuid.UUID(int=rng.getrandbits(128)).hex
    for i in range(n):
        occurred = now_us - (n - i) * 1000
        if i % 10 == 0:
            trace = uuid.UUID(int=rng.getrandbits(128)).hex
        svc = rng.choice(SERVICES)
        if rng.random() < 0.5:
            rid = f"app.{svc}.{rng.randrange(2000 // len(SERVICES))}"
            # Labels describe the resource (unless --labels-per-event): the same set each time.
            own = rng if labels_per_event else random.Random(rid)
            resource = {"prefect.resource.id": rid, "region": own.choice(["eu", "us"])}
            if own.random() < 0.5:
                resource["version"] = f"1.{own.randrange(3)}"
            related = [
                {
                    "prefect.resource.id": f"app.{role}.{rng.randrange(500)}",
                    "prefect.resource.role": role,
                }
                for role in rng.sample(["customer", "tenant", "flow"], rng.randrange(4))
            ]
            name = f"app.{svc}.{rng.choice(VERBS)}"
        else:
            resource = {
                "prefect.resource.id": f"otel.service.{svc}",
                "service.name": svc,
                "service.instance.id": f"i-{rng.randrange(4)}",
            }
            related = [
                {"prefect.resource.id": f"otel.trace.{trace}", "prefect.resource.role": "trace"}
            ]
            name = "otel.span.ok"
        payload = f'{{"n":{i},"status":"ok","duration_ms":{rng.randrange(5000)}}}'
        cols.append(str(uuid.uuid4()), occurred, name, resource, related, payload)
    return cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument(
        "--labels-per-event",
        action="store_true",
        help="draw each event's labels anew (a new label set for most events: the worst case)",
    )
    args = ap.parse_args()
    print("command: .venv/bin/python benchmarks/append_cost.py " + shlex.join(sys.argv[1:]))
    one, five, _ = os.getloadavg()
    print(f"load average {one:.2f} (1 min), {five:.2f} (5 min); nproc {os.cpu_count()}")
    rng = random.Random(args.seed)
    now_us = datetime_to_us(datetime.now(UTC))
    batches = [
        columns_to_arrow(cols, [now_us] * len(cols))
        for cols in (
            batch(rng, args.batch, now_us + k * 10**6, labels_per_event=args.labels_per_event)
            for k in range(args.batches)
        )
    ]
    with tempfile.TemporaryDirectory(prefix="herald-append-cost-") as tmp:
        store = EventStore(Path(tmp) / "s.duckdb")
        try:
            cpu: list[float] = []
            wall: list[float] = []
            for table in batches:
                c, t = time.process_time(), time.perf_counter()
                store.append(table)
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - t)
        finally:
            store.close()
    per_event = 1e6 / args.batch
    # The first batches warm DuckDB up: the median of the rest.
    rest = slice(min(10, len(cpu) // 4), None)
    cpu_us = statistics.median(cpu[rest]) * per_event
    wall_us = statistics.median(wall[rest]) * per_event
    print(
        f"append of {args.batch:,}-event batches: CPU p50 {cpu_us:.2f} µs/event, "
        f"wall p50 {wall_us:.2f} µs/event, "
        f"CPU total {sum(cpu):.2f} s for {args.batches * args.batch:,} events"
    )


if __name__ == "__main__":
    main()
