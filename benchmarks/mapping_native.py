"""Micro-benchmark of native ingest's decode + validate step alone (no network, no store): CPU
time per event to turn a 1,000-event JSON request body into ``EventColumns``, i.e. what
``NativeIngest.emit_json`` does on the event loop before the queue.

    .venv/bin/python benchmarks/mapping_native.py [--repeats 15]

Bodies come from ``benchmarks/ingest_native.make_batch`` (3–6 labels, 0–3 related resources, a
small payload, a UUIDv4 id). Variants: the same with an ``occurred`` on every event, without
ids (ingest makes UUIDv7s), and
batches where one event in 100 is invalid (per-item errors) in two ways that leave the fast
path at different points. "exact path" is ``parse_events_json`` + ``json_events_to_columns``
(what ingest ran before msgspec), "fast path" ``json_body_to_columns`` (what it runs now).
CPU time of this thread (``time.thread_time``) is used rather than wall time because the
machine is shared: the best of ``--repeats`` runs is reported, in µs per event.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks.ingest_native import make_batch
from collector.clock import now_us
from collector.domain.events import Limits
from collector.mapping.native import (
    json_body_to_columns,
    json_events_to_columns,
    parse_events_json,
)

SIZE = 1000


def with_occurred(body: bytes) -> bytes:
    items = orjson.loads(body)
    for i, item in enumerate(items):
        item["occurred"] = f"2026-01-02T03:04:{i % 60:02d}.{i:06d}+00:00"
    return orjson.dumps(items)


def without_ids(body: bytes) -> bytes:
    items = orjson.loads(body)
    for item in items:
        del item["id"]
    return orjson.dumps(items)


def with_bad_labels(body: bytes) -> bytes:
    """One item in 100 (the last of each hundred) has a non-string label: msgspec's typed
    decode refuses the body, so all of it takes the exact path."""
    items = orjson.loads(body)
    for i in range(99, len(items), 100):
        items[i]["resource"]["label.bad"] = 7
    return orjson.dumps(items)


def with_bad_times(body: bytes) -> bytes:
    """One item in 100 has an ``occurred`` before 2000: msgspec decodes the body, the fast path
    hands those items to the exact path (which then decodes the body with orjson too)."""
    items = orjson.loads(body)
    for i in range(99, len(items), 100):
        items[i]["occurred"] = "1999-01-01T00:00:00Z"
    return orjson.dumps(items)


def cpu_us_per_event(fn: Callable[[], object], repeats: int, loops: int = 3) -> float:
    """Best thread CPU time per event over ``repeats`` runs of ``loops`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(loops):
            fn()
        best = min(best, (time.thread_time() - start) / loops)
    return best / SIZE * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print_header()
    rng = random.Random(7)
    limits = Limits()
    plain = make_batch(rng, SIZE)
    bodies = {
        "typical (no occurred)": plain,
        "with occurred": with_occurred(plain),
        "without ids": without_ids(plain),
        "1 % bad labels": with_bad_labels(plain),
        "1 % bad times": with_bad_times(plain),
    }
    print(
        f"{'body':<24} {'decode µs/ev':>13} {'validate µs/ev':>15} {'exact path':>11} "
        f"{'fast path':>10}"
    )
    for label, body in bodies.items():
        items = parse_events_json(body)
        cols, errors = json_events_to_columns(items, now_us(), limits)
        assert len(cols) + len(errors) == SIZE

        def decode(body: bytes = body) -> object:
            return parse_events_json(body)

        def validate(items: list[object] = items) -> object:
            return json_events_to_columns(items, now_us(), limits)

        def both(body: bytes = body) -> object:
            return json_events_to_columns(parse_events_json(body), now_us(), limits)

        d = cpu_us_per_event(decode, args.repeats)
        v = cpu_us_per_event(validate, args.repeats)

        def fast(body: bytes = body) -> object:
            return json_body_to_columns(body, now_us(), limits)

        t = cpu_us_per_event(both, args.repeats)
        f = cpu_us_per_event(fast, args.repeats)
        print(f"{label:<24} {d:>13.2f} {v:>15.2f} {t:>11.2f} {f:>10.2f}")


if __name__ == "__main__":
    main()
