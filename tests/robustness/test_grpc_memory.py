"""gRPC memory under hostile and bursty callers (issue 9, item 7), against `herald serve` as a
child process whose RSS is read from /proc: unauthenticated large requests are refused from
their headers, the call cap and the byte budget answer busy with a retry hint, and everything
acknowledged is stored."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.domain.ids import uuid7_str
from collector.testing import ports_zero, serve_process

pytestmark = pytest.mark.e2e

TOKEN = "memory-test-ingest-token"
MiB = 1024 * 1024
LIMIT = 8 * MiB
CLIENT_OPTIONS = [
    # Clients may send more than the server takes (to show what the server does with it).
    ("grpc.max_send_message_length", 64 * MiB),
    # One connection per channel, as separate clients have: grpcio would otherwise share one,
    # and the server's per-connection stream limit would queue the calls in the client.
    ("grpc.use_local_subchannel_pool", 1),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every 10 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self.peak = rss_mb(pid)
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def stop(self) -> float:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))
        return self.peak - self.start


def server_env(**server: int) -> dict[str, str]:
    env = {
        "HERALD_AUTH__TOKENS": json.dumps([{"token": TOKEN, "scopes": ["ingest"]}]),
        "HERALD_SERVER__MAX_RECEIVE_BYTES": str(LIMIT),
    }
    env.update({f"HERALD_SERVER__{k.upper()}": str(v) for k, v in server.items()})
    return env


def events_body(ids: list[str], payload_bytes: int) -> bytes:
    """A JSON list of valid events with the given ids, each with a payload of about that size."""
    filler = "x" * payload_bytes
    return orjson.dumps(
        [
            {
                "event": "memory.test",
                "resource": {"prefect.resource.id": "memory.test.1"},
                "id": event_id,
                "payload": {"filler": filler},
            }
            for event_id in ids
        ]
    )


def burst(address: str, calls: list[tuple[bytes, str | None]]) -> list[Any]:
    """Each ``(body, token)`` as an ``Emit`` on its own connection, all sent at once (the
    connections are made first); the responses or ``RpcError``s, in order."""
    channels = [grpc.insecure_channel(address, options=CLIENT_OPTIONS) for _ in calls]
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)
        start = threading.Barrier(len(calls))

        def call(i: int) -> Any:
            body, token = calls[i]
            metadata = [("authorization", f"Bearer {token}")] if token else []
            stub = herald_pb2_grpc.HeraldStub(channels[i])
            start.wait()
            try:
                return stub.Emit(
                    herald_pb2.EmitRequest(events_json=body), metadata=metadata, timeout=60
                )
            except grpc.RpcError as exc:
                return exc

        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(call, range(len(calls))))
    finally:
        for channel in channels:
            channel.close()


def retry_delay(exc: grpc.RpcError) -> float | None:
    """The RetryInfo delay in the error's grpc-status-details-bin, if any."""
    for item in exc.trailing_metadata() or ():
        if item.key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(item.value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def stored_ids(db: Path) -> set[str]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in conn.execute("SELECT id::VARCHAR FROM events").fetchall()}
    finally:
        conn.close()


def test_unauthenticated_large_emits_are_refused_before_their_body_is_held(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.duckdb"
    big = b"[" + b" " * (LIMIT - 1024) + b"]"  # 16 x ~8 MiB = 128 MiB if it were received
    good_ids = [uuid7_str() for _ in range(40)]
    with serve_process(*ports_zero(db), env=server_env()) as served:
        rss = PeakRss(served.proc.pid)
        calls: list[tuple[bytes, str | None]] = [(big, None)] * 8
        calls += [(big, "not-a-configured-token")] * 8
        # Authenticated senders at the same time still get through.
        calls += [(events_body(good_ids[i::4], 1_000), TOKEN) for i in range(4)]
        results = burst(served.grpc, calls)
        growth = rss.stop()
        refused, good = results[:16], results[16:]
        for result in refused:
            assert isinstance(result, grpc.RpcError)
            assert result.code() == grpc.StatusCode.UNAUTHENTICATED, result
        for result in good:
            assert isinstance(result, herald_pb2.EmitResponse), result
            assert result.accepted == 10 and not result.errors
        # Measured: +1.1 GB for 16 x 60 MiB, +~150 MB for 16 x 8 MiB when the token was checked
        # after gRPC had received the message; < 10 MB when refused from the headers.
        assert growth < 60, f"server RSS grew {growth:.0f} MB for refused requests"
        served.sigterm()
    assert stored_ids(db) == set(good_ids)


def test_over_the_limits_is_busy_with_a_retry_hint_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    db = tmp_path / "busy.duckdb"
    # One request receives at a time (budget = one largest request) and at most 4 calls are
    # in the server at once, so a burst of 24 ~2 MiB requests must meet both limits.
    env = server_env(grpc_max_concurrent_rpcs=4, max_inflight_bytes=LIMIT)
    batches = [[uuid7_str() for _ in range(20)] for _ in range(24)]
    with serve_process(*ports_zero(db), env=env) as served:
        rss = PeakRss(served.proc.pid)
        results = burst(served.grpc, [(events_body(ids, 100_000), TOKEN) for ids in batches])
        growth = rss.stop()
        acknowledged: set[str] = set()
        busy = 0
        for ids, result in zip(batches, results, strict=True):
            if isinstance(result, herald_pb2.EmitResponse):
                assert result.accepted == len(ids) and not result.errors
                acknowledged.update(ids)
                continue
            assert result.code() == grpc.StatusCode.UNAVAILABLE, result
            assert "retry later" in result.details()
            delay = retry_delay(result)
            assert delay is not None and delay > 0, "busy without a RetryInfo hint"
            busy += 1
        assert busy, "24 concurrent calls against a cap of 4 were all admitted"
        assert acknowledged, "no call was admitted"
        # 24 x 2 MiB = 48 MiB of requests; the server holds at most one at a time.
        assert growth < 200, f"server RSS grew {growth:.0f} MB"
        served.sigterm()
    # Acknowledged means stored; a busy call was refused before it was read, so nothing of it.
    assert stored_ids(db) == acknowledged
