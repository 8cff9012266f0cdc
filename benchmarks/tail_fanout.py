"""Live-tail fan-out cost: native ingest throughput with no tail subscribers and with 50 of
them, in one run against one server, and the ratio.

    .venv/bin/python benchmarks/tail_fanout.py --subscribers 50 --clients 4 --seconds 20

Phases, each `--seconds` of ingest by `--clients` load processes (the `ingest_native.py`
clients: batches of `--batch` realistic events through gRPC `Emit`):

* `none`      no subscribers (measured first and last; the baseline is their mean);
* `indexed`   subscribers whose filters match nothing and that the tail index answers by
  lookup: exact event names, name prefixes, resource ids, resource id prefixes;
* `check-all` subscribers whose filters match nothing and that the index cannot answer
  (related ids, any-resource ids, label values, text search), so every event is pre-checked
  for each of them;
* `matching`  subscribers that each match ~0.2 % of the events (a resource id prefix), read
  by the subscriber process.

Subscribers live in their own process (one thread per stream, reading everything). The server
runs with `query.max_tail_subscribers` = `--subscribers`, so a probe `Tail` being refused
(busy) proves every subscriber of a phase is registered before the load starts. `--rounds`
repeats the whole sequence.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from benchmarks.ingest_native import SERVICES
from benchmarks.ingest_native import client as load_client
from collector._proto import herald_pb2, herald_pb2_grpc

PROBE_FILTER = {"event": {"name": ["bench.probe.never"]}}
# Spawned, not forked: this process holds a gRPC channel, and gRPC does not survive a fork.
MP = mp.get_context("spawn")


def indexed_filters(n: int) -> list[dict[str, Any]]:
    kinds = [
        lambda i: {"event": {"name": [f"bench.none.{i}", f"bench.none.{i}.b"]}},
        lambda i: {"event": {"prefix": [f"nothing.{i}."]}},
        lambda i: {"resource": {"id": [f"app.nobody.{i}"]}},
        lambda i: {"resource": {"id_prefix": [f"nobody.{i}."]}},
        lambda i: {"event": {"name": [f"app.checkout.never{i}"]}, "resource": {"id": ["x"]}},
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def check_all_filters(n: int) -> list[dict[str, Any]]:
    kinds: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"related": {"id": [f"app.nobody.{i}"]}},
        lambda i: {"any_resource": {"id": [f"app.nobody.{i}"]}},
        lambda i: {"resource": {"labels": {"label.0": f"never-{i}"}}},
        lambda i: {"text": {"query": f"needle{i}"}},
        lambda i: {"event": {"exclude_prefix": ["app."]}},
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def matching_filters(n: int) -> list[dict[str, Any]]:
    # Resource ids are app.<service>.<0..9999>: a two-digit prefix holds 111 of 10,000 ids.
    return [
        {"resource": {"id_prefix": [f"app.{SERVICES[i % len(SERVICES)]}.{10 + i}"]}}
        for i in range(n)
    ]


def subscriber_process(
    address: str, filters: list[dict[str, Any]], ready: Any, stop: Any, out: Any
) -> None:
    channel = grpc.insecure_channel(address)
    stub = herald_pb2_grpc.HeraldStub(channel)
    counts = [[0, 0] for _ in filters]  # events, lagged
    calls = [
        stub.Tail(herald_pb2.TailRequest(filter_json=orjson.dumps(f), backfill=False))
        for f in filters
    ]

    def read(k: int) -> None:
        try:
            for message in calls[k]:
                if message.WhichOneof("item") == "lagged":
                    counts[k][1] += message.lagged
                else:
                    counts[k][0] += 1
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                counts[k][1] = -1  # refused or failed: reported as an error below

    for call in calls:
        call.initial_metadata()  # the server sends its headers once it has subscribed
    ready.set()
    readers = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(len(calls))]
    for r in readers:
        r.start()
    stop.wait()
    for call in calls:
        call.cancel()
    for r in readers:
        r.join(10)
    channel.close()
    out.put(counts)


def probe_refused(stub: herald_pb2_grpc.HeraldStub) -> bool:
    """True if a new Tail is refused as busy (every slot taken); an accepted one times out."""
    call = stub.Tail(
        herald_pb2.TailRequest(filter_json=orjson.dumps(PROBE_FILTER), backfill=False),
        timeout=0.5,
    )
    try:
        next(call)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE and "max_tail_subscribers" in (
            exc.details() or ""
        ):
            return True
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return False
        raise
    return False


def run_phase(
    server: ServerProcess,
    stub: herald_pb2_grpc.HeraldStub,
    name: str,
    filters: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ready, stop = MP.Event(), MP.Event()
    subs_out: Any = MP.Queue()
    sub_proc = None
    if filters:
        sub_proc = MP.Process(
            target=subscriber_process, args=(server.grpc, filters, ready, stop, subs_out)
        )
        sub_proc.start()
        if not ready.wait(120):
            raise RuntimeError(f"{name}: subscribers did not register within 120 s")
        # Every slot is taken: one more subscriber is refused as busy.
        if not probe_refused(stub):
            raise RuntimeError(f"{name}: a subscriber past the cap was accepted")
    out: Any = MP.Queue()
    procs = [
        MP.Process(target=load_client, args=(server.grpc, args.seconds, args.batch, 100 + s, out))
        for s in range(args.clients)
    ]
    cpu0 = server.cpu_seconds()
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get(timeout=args.seconds + 300) for _ in procs]
    elapsed = time.monotonic() - t0
    cpu = server.cpu_seconds() - cpu0
    for p in procs:
        p.join()
    delivered = lagged = errors = 0
    if sub_proc is not None:
        stop.set()
        counts = subs_out.get(timeout=60)
        sub_proc.join(30)
        delivered = sum(c[0] for c in counts)
        lagged = sum(c[1] for c in counts if c[1] > 0)
        errors = sum(1 for c in counts if c[1] < 0)
        # Closed streams free their slots (polled: the server notices the cancels).
        deadline = time.monotonic() + 30
        while probe_refused(stub):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: slots not freed 30 s after the subscribers left")
    acked = sum(r[0] for r in results)
    lats = sorted(x for r in results for x in r[2])
    return {
        "phase": name,
        "subscribers": len(filters),
        "acked": acked,
        "events_s": acked / elapsed,
        "p50_ms": statistics.median(lats) * 1000 if lats else 0.0,
        "p99_ms": lats[int(len(lats) * 0.99)] * 1000 if lats else 0.0,
        "busy": sum(r[1] for r in results),
        "cpu_s": cpu,
        "elapsed": elapsed,
        "delivered": delivered,
        "lagged": lagged,
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--phases",
        default="none,indexed,check-all,matching,none",
        help="comma-separated, from: none, indexed, check-all, matching",
    )
    args = ap.parse_args()
    print_header()
    n = args.subscribers
    make: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "none": list,
        "indexed": lambda: indexed_filters(n),
        "check-all": lambda: check_all_filters(n),
        "matching": lambda: matching_filters(n),
    }
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    server = ServerProcess(env={"HERALD_QUERY__MAX_TAIL_SUBSCRIBERS": str(n)})
    rows: list[dict[str, Any]] = []
    try:
        channel = grpc.insecure_channel(server.grpc)
        stub = herald_pb2_grpc.HeraldStub(channel)
        for _ in range(args.rounds):
            for phase in phases:
                row = run_phase(server, stub, phase, make[phase](), args)
                rows.append(row)
                print(
                    f"  {row['phase']:<10} {row['events_s']:>9,.0f} ev/s  "
                    f"p50 {row['p50_ms']:.0f} ms  p99 {row['p99_ms']:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        channel.close()
        code = server.stop()
        stored = server.count_events()
    finally:
        server.cleanup()

    base_rows = [r for r in rows if r["phase"] == "none"]
    baseline = statistics.mean(r["events_s"] for r in base_rows) if base_rows else 0.0
    print(
        f"clients={args.clients} batch={args.batch} seconds={args.seconds} "
        f"subscribers={n} rounds={args.rounds}"
    )
    print(
        f"{'phase':<10} {'subs':>4} {'events/s':>10} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'busy':>5} {'cpu s':>6} {'delivered':>9} {'lagged':>7}"
    )
    for r in rows:
        ratio = r["events_s"] / baseline if baseline else float("nan")
        print(
            f"{r['phase']:<10} {r['subscribers']:>4} {r['events_s']:>10,.0f} {ratio:>6.2f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['busy']:>5} {r['cpu_s']:>6.1f} "
            f"{r['delivered']:>9} {r['lagged']:>7}"
        )
    for phase in ("indexed", "check-all", "matching"):
        got = [r["events_s"] for r in rows if r["phase"] == phase]
        if got and baseline:
            cost = 1 - statistics.mean(got) / baseline
            print(f"ingest cost of {n} {phase} subscribers: {cost:+.1%}")
    print(f"stored after SIGTERM     {stored} (exit code {code})")
    if any(r["errors"] for r in rows):
        print("ERROR: some subscriber streams failed")
        sys.exit(1)
    if stored < sum(r["acked"] for r in rows):
        print("ERROR: acknowledged events are missing from the store")
        sys.exit(1)


if __name__ == "__main__":
    main()
