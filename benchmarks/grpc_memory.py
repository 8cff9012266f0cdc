"""Server memory under concurrent large gRPC `Emit` calls (issue 9, item 7): RSS before, peak
and after, for callers without a token and with one.

    .venv/bin/python benchmarks/grpc_memory.py                 # 16 x 60 MiB, every scenario
    .venv/bin/python benchmarks/grpc_memory.py --clients 16 --mib 60 --scenarios unauthenticated

Each scenario starts its own `herald serve` (auth on: one ingest token, default limits unless
`--env KEY=VALUE` says otherwise), sends ``--clients`` `Emit` calls of ``--mib`` MiB at once,
each on its own connection, and samples the server's RSS every 10 ms from /proc.

Scenarios:
  unauthenticated  no token (half the calls) or an unknown one (the other half)
  invalid          a valid token; events that all fail validation (nothing is stored), so the
                   memory is the requests' alone
  valid            a valid token; 1 MB events that are stored (the store's memory adds up)

``--checkout PATH`` runs the server from another checkout (e.g. a `git worktree` of an older
commit) to compare. After each run the server gets SIGTERM and, for "valid", the events in the
file are counted: every acknowledged event must be there.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks._server as server_module
from benchmarks._header import print_header
from benchmarks._server import ServerProcess
from collector._proto import herald_pb2, herald_pb2_grpc

TOKEN = "bench-ingest-token"
MiB = 1024 * 1024
EVENT_PAYLOAD = 1_000_000  # bytes of filler per event: ~1 MB events, 60 per 60 MiB request


def body(mib: int, valid: bool) -> tuple[bytes, int]:
    """A JSON list of ~1 MB events filling about ``mib`` MiB, and how many events it holds."""
    n = max(1, mib * MiB // (EVENT_PAYLOAD + 200))
    resource = '"prefect.resource.id":"bench.memory"' if valid else '"no.id":"bench.memory"'
    filler = "x" * EVENT_PAYLOAD
    events = [
        f'{{"event":"bench.memory","id":"{uuid.uuid4()}","resource":{{{resource}}},'
        f'"payload":{{"filler":"{filler}"}}}}'
        for _ in range(n)
    ]
    return ("[" + ",".join(events) + "]").encode(), n


class Rss:
    """RSS of a process sampled every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._running = True
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while self._running:
            try:
                self.peak = max(self.peak, self.now())
            except OSError:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._running = False


def run(scenario: str, clients: int, mib: int, env: dict[str, str]) -> dict[str, object]:
    server_env = {"HERALD_AUTH__TOKENS": json.dumps([{"token": TOKEN, "scopes": ["ingest"]}])}
    server_env.update(env)
    # A body per call: ids are the dedupe key, so a repeated body would store less.
    bodies = [body(mib, valid=scenario == "valid") for _ in range(clients)]
    per_call = bodies[0][1]
    server = ServerProcess(env=server_env)
    try:
        rss = Rss(server.proc.pid)
        time.sleep(1.0)  # let the started server settle before the "before" reading
        before = rss.now()
        options = [
            ("grpc.max_send_message_length", 2 * mib * MiB),
            ("grpc.use_local_subchannel_pool", 1),  # one connection per client
        ]
        channels = [grpc.insecure_channel(server.grpc, options=options) for _ in range(clients)]
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)
        start = threading.Barrier(clients)

        def call(i: int) -> tuple[str, float]:
            if scenario == "unauthenticated":
                metadata = [] if i % 2 else [("authorization", "Bearer not-a-configured-token")]
            else:
                metadata = [("authorization", f"Bearer {TOKEN}")]
            stub = herald_pb2_grpc.HeraldStub(channels[i])
            start.wait()
            t0 = time.monotonic()
            try:
                reply = stub.Emit(
                    herald_pb2.EmitRequest(events_json=bodies[i][0]), metadata=metadata, timeout=300
                )
                outcome = f"OK accepted={reply.accepted}"
            except grpc.RpcError as exc:
                outcome = exc.code().name
            return outcome, time.monotonic() - t0

        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(call, range(clients)))
        for channel in channels:
            channel.close()
        time.sleep(2.0)  # what the server keeps once the burst is over
        after = rss.now()
        rss.stop()
        acknowledged = sum(
            per_call for outcome, _ in results if outcome == "OK accepted=" + str(per_call)
        )
        code = server.stop()
        stored = server.count_events()
        return {
            "scenario": scenario,
            "answers": dict(Counter(outcome for outcome, _ in results)),
            "slowest_s": round(max(t for _, t in results), 1),
            "rss_before_mb": round(before),
            "rss_peak_mb": round(rss.peak),
            "rss_after_mb": round(after),
            "acknowledged_events": acknowledged,
            "stored_events": stored,
            "exit_code": code,
        }
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=int, default=60, help="request size (MiB)")
    parser.add_argument("--scenarios", default="unauthenticated,invalid,valid")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--checkout", type=Path, help="run the server from this checkout")
    args = parser.parse_args()
    print_header()
    if args.checkout:
        server_module.ROOT = args.checkout.resolve()
    env = dict(kv.split("=", 1) for kv in args.env)
    for scenario in args.scenarios.split(","):
        result = run(scenario, args.clients, args.mib, env)
        print(json.dumps(result), flush=True)
        if result["stored_events"] != result["acknowledged_events"]:
            sys.exit(
                f"{scenario}: {result['acknowledged_events']} acknowledged, "
                f"{result['stored_events']} stored"
            )


if __name__ == "__main__":
    main()
