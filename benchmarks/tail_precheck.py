"""Live-tail check-all pre-check cost: CPU milliseconds the tail index spends per committed
1,000-event batch finding candidate rows for subscribers whose filters match nothing and that
the index cannot answer by lookup (``benchmarks/tail_fanout.py``'s check-all filters).

    .venv/bin/python benchmarks/tail_precheck.py --batches 20 --repeat 3

No server: the batches are the ingest benchmark's realistic events (``ingest_native.make_batch``)
decoded to columns once, then ``TailIndex.candidates`` runs over them for each filter kind (10
subscribers of one kind) and for all 50 together, then for a few other non-matching sets the
fan-out benchmark does not use (distinct text words, label values and related ids whose shared
prefix is common in the data). Process CPU time, so other work on the machine inflates the
numbers less than wall time would.

``--tail-index FILE`` measures another version of ``collector/pipeline/tail_index.py`` (e.g.
``git show <commit>:collector/pipeline/tail_index.py > /tmp/old_tail_index.py``) on the same
batches, for before/after numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks.ingest_native import make_batch
from benchmarks.tail_fanout import check_all_filters
from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.domain.filters import EventFilter
from collector.mapping.native import json_events_to_columns
from collector.pipeline import tail_index

KINDS = ["related id", "any_resource id", "label value", "text search", "name exclude_prefix"]

WORDS = ["timeout", "refused", "oom", "panic", "deadlock", "fatal", "segv", "abort", "kill", "boom"]
# Values are value-0..49 and customers 0..4999: "value-" and "app.customer." are everywhere.
OTHERS: dict[str, list[dict[str, Any]]] = {
    "text distinct words": [{"text": {"query": w}} for w in WORDS],
    "text same word": [{"text": {"query": "timeout"}} for _ in WORDS],
    "label common prefix": [
        {"resource": {"labels": {"label.0": f"value-{1000 + i}"}}} for i in range(10)
    ],
    "related common pfx": [{"related": {"id": [f"app.customer.{9000 + i}"]}} for i in range(10)],
}


def load_tail_index(path: str | None) -> ModuleType:
    if path is None:
        return tail_index
    spec = importlib.util.spec_from_file_location("tail_index_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def cpu_ms_per_batch(
    module: ModuleType, filters: list[EventFilter], batches: list[EventColumns], repeat: int
) -> float:
    index = module.TailIndex(list(enumerate(filters)))
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
    parser.add_argument("--tail-index", help="another tail_index.py to measure instead")
    args = parser.parse_args()
    print_header()
    module = load_tail_index(args.tail_index)
    rng = random.Random(1)
    batches = [
        json_events_to_columns(orjson.loads(make_batch(rng, args.batch)), now_us(), Limits())[0]
        for _ in range(args.batches)
    ]
    specs = check_all_filters(args.subscribers)
    filters = [EventFilter.model_validate(f) for f in specs]
    for kind, label in enumerate(KINDS):
        of_kind = [f for i, f in enumerate(filters) if i % len(KINDS) == kind]
        ms = cpu_ms_per_batch(module, of_kind, batches, args.repeat)
        print(f"{label:<20} {len(of_kind):>3} subscribers  {ms:6.2f} ms/batch")
    ms = cpu_ms_per_batch(module, filters, batches, args.repeat)
    print(f"{'all kinds':<20} {len(filters):>3} subscribers  {ms:6.2f} ms/batch")
    for label, specs in OTHERS.items():
        others = [EventFilter.model_validate(f) for f in specs]
        ms = cpu_ms_per_batch(module, others, batches, args.repeat)
        print(f"{label:<20} {len(others):>3} subscribers  {ms:6.2f} ms/batch")


if __name__ == "__main__":
    main()
