"""What self-metrics add to the ingest hot path, per request, next to what the request costs
anyway (mapping its events to columns), measured in-process without a server.

    .venv/bin/python benchmarks/metrics_overhead.py

Per request the ingest step reports twice (``ingested``, ``stored``), the writer sizes the batch
for the queue-bytes gauge (``approx_bytes``: three ``map(len)`` passes) and reports each group
commit once (``group_commit``: two histogram observations, two counters). Times are the best of
several repeats (the machine may be shared), in microseconds per request.
"""

from __future__ import annotations

import random
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks.ingest_native import make_batch
from collector.clock import now_us
from collector.domain.events import Limits
from collector.mapping.native import json_events_to_columns
from collector.server.prometheus_metrics import PrometheusMetrics
from collector.store.writer import approx_bytes


def best_us(fn: Callable[[], object], number: int) -> float:
    """Microseconds per call of ``fn``, the best of 7 repeats."""
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def measure(size: int, rng: random.Random, metrics: PrometheusMetrics) -> str:
    limits = Limits()
    items = orjson.loads(make_batch(rng, size))
    columns, errors = json_events_to_columns(items, now_us(), limits)
    assert not errors and len(columns) == size
    number = max(20, 20_000 // size)
    mapping = best_us(lambda: json_events_to_columns(items, now_us(), limits), number)

    def report() -> None:
        metrics.ingested("events", size, 0)
        metrics.stored("events", size)
        metrics.group_commit(size, size, 0.004)  # one commit per request: the worst case

    calls = best_us(report, 20_000)
    sizing = best_us(lambda: approx_bytes(columns), number)
    added = (calls + sizing) / mapping * 100
    return f"{size:>8} {mapping:>12.1f} {calls:>12.2f} {sizing:>10.2f} {added:>8.2f} %"


def main() -> None:
    print_header()
    rng = random.Random(7)
    metrics = PrometheusMetrics("bench")
    print(f"{'events':>8} {'mapping µs':>12} {'reports µs':>12} {'sizing µs':>10} {'added':>10}")
    for size in (1, 10, 100, 1000):
        print(measure(size, rng, metrics))
    started = timeit.default_timer()
    scrape = metrics.render()
    took = (timeit.default_timer() - started) * 1000
    print(f"one scrape: {len(scrape):,} bytes rendered in {took:.1f} ms")


if __name__ == "__main__":
    main()
