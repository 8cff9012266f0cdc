"""Live-tail check-all pre-check cost: CPU milliseconds the tail index spends per committed
1,000-event batch finding candidate rows for subscribers whose filters match nothing and that
the index cannot answer by lookup (``benchmarks/tail_fanout.py``'s check-all filters).

    .venv/bin/python benchmarks/tail_precheck.py --batches 20 --repeat 3

No server: the batches are the ingest benchmark's realistic events (``ingest_native.make_batch``)
decoded to columns once, then ``TailIndex.candidates`` runs over them for each filter kind (10
subscribers of one kind) and for all 50 together. Process CPU time, so other work on the
machine inflates the numbers less than wall time would.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_native import make_batch
from benchmarks.tail_fanout import check_all_filters
from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.domain.filters import EventFilter
from collector.mapping.native import json_events_to_columns
from collector.pipeline.tail_index import TailIndex

KINDS = ["related id", "any_resource id", "label value", "text search", "name exclude_prefix"]


def cpu_ms_per_batch(filters: list[EventFilter], batches: list[EventColumns], repeat: int) -> float:
    index = TailIndex(list(enumerate(filters)))
    start = time.process_time()
    for _ in range(repeat):
        for cols in batches:
            if index.candidates(cols):
                raise AssertionError("a check-all benchmark filter matched an event")
    return (time.process_time() - start) / (repeat * len(batches)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(1)
    batches = [
        json_events_to_columns(orjson.loads(make_batch(rng, args.batch)), now_us(), Limits())[0]
        for _ in range(args.batches)
    ]
    specs = check_all_filters(args.subscribers)
    filters = [EventFilter.model_validate(f) for f in specs]
    for kind, label in enumerate(KINDS):
        of_kind = [f for i, f in enumerate(filters) if i % len(KINDS) == kind]
        ms = cpu_ms_per_batch(of_kind, batches, args.repeat)
        print(f"{label:<20} {len(of_kind):>3} subscribers  {ms:6.2f} ms/batch")
    ms = cpu_ms_per_batch(filters, batches, args.repeat)
    print(f"{'all kinds':<20} {len(filters):>3} subscribers  {ms:6.2f} ms/batch")


if __name__ == "__main__":
    main()
