"""``herald events count --by resource``: the whole answer vs. the top 20 (``count_groups``
with ``limit``, what the CLI asks for by default), through ``EventReader`` — the code path of
the gRPC server and of ``--db``.

    .venv/bin/python benchmarks/count_top.py                  # the three stores below
    .venv/bin/python benchmarks/count_top.py --runs 5

Stores (temp DuckDB files made by ``EventStore``, filled by DuckDB SQL, events spread over
the 23 days before now; a third of the resources carry a ``prefect.resource.name`` label):

* 2M events over 200,000 resources (~10 events each: many ties at the cut);
* 2M events over 1,000 resources;
* 300,000 events, every one its own resource (all tied: the worst case for the cut).

Reported: p50 of ``--runs`` runs after one warm-up, for the whole answer, the top 20, and the
top 20 behind a name filter that one event in 20 passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from collector.clock import SystemClock
from collector.config import QueryConfig
from collector.domain.filters import EventFilter, parse_filter
from collector.store.duckdb_store import EventStore
from collector.store.filter_index import index_unindexed_events
from collector.store.reader import EventReader

STORES = [(2_000_000, 200_000), (2_000_000, 1_000), (300_000, None)]


def build(path: Path, events: int, resources: int | None) -> None:
    rid = "range" if resources is None else f"(hash(range * 7) % {resources})"
    store = EventStore(path)
    try:
        store.cursor().execute(
            f"""INSERT INTO events (id, occurred, received, event, resource_id, resource, related,
            payload, follows) SELECT uuid(), now() - INTERVAL ({events} - range) SECOND,
            now(), 'app.ev.' || (hash(range) % 20), 'app.res.' || {rid},
            CASE WHEN {rid} % 3 = 0
              THEN '{{"prefect.resource.id":"app.res.' || {rid} ||
                   '","prefect.resource.name":"n' || ({rid} % 50) || '"}}'
              ELSE '{{"prefect.resource.id":"app.res.' || {rid} || '"}}' END,
            '[]', '{{}}', NULL FROM range({events})"""
        )
        index_unindexed_events(store.cursor())
    finally:
        store.close()


def p50_ms(reader: EventReader, filter: EventFilter | None, limit: int | None, runs: int) -> float:
    """Median milliseconds of ``count_groups`` by resource, after one warm-up run."""
    reader.count_groups(filter, "resource", limit=limit)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        reader.count_groups(filter, "resource", limit=limit)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print_header()
    one_name = parse_filter({"event": {"name": ["app.ev.3"]}})
    print("| events | resources | whole answer | top 20 | top 20, 1 name in 20 |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for events, resources in STORES:
            path = Path(folder) / f"{events}-{resources}.duckdb"
            build(path, events, resources)
            reader = EventReader(EventStore(path), QueryConfig(), clock=SystemClock())
            try:
                whole = p50_ms(reader, None, None, args.runs)
                top = p50_ms(reader, None, 20, args.runs)
                named = p50_ms(reader, one_name, 20, args.runs)
                groups = reader.count_groups(None, "resource", limit=1).groups
            finally:
                reader.store.close()
            print(
                f"| {events:,} | {groups:,} | {whole:,.0f} ms | {top:,.0f} ms | {named:,.0f} ms |"
            )


if __name__ == "__main__":
    main()
