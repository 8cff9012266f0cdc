"""OTLP ingest through the mapping worker processes (``ingest.mapping_workers``, issue 13).

The OTLP receiver tests (test_otlp_receivers.py) run against the default configuration; here they
run again with the other path (in-process mapping when the default has workers, workers when it
has none), and what only a pool can do wrong — answers that differ from in-process mapping, a
worker killed mid-request or while idle, a full pool, a shutdown while workers are busy — is
tested with real worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.clock import now_us
from collector.config import Config, IngestConfig
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.mapping.otlp_traces import traces_to_events
from collector.pipeline.otlp_workers import MappingPool
from collector.pipeline.tail import wire_json
from collector.store.arrow_batch import ArrowColumns, columns_to_arrow, stamp_received
from collector.testing import ports_zero, running_herald, serve_process, test_config
from tests.integration.test_otlp_receivers import (  # the receiver tests, run through workers
    TRACE_ID,
    grpc_export,
    http_post,
    kv,
    logs_request,
    stored,
    test_empty_request_is_a_plain_success,
    test_malformed_body_is_400_or_invalid_argument,
    test_metrics_are_answered_with_every_point_rejected,
    test_one_invalid_span_is_a_partial_success_and_the_rest_is_stored,
    test_otlp_json_with_hex_ids,
    test_same_export_twice_is_stored_once,
    test_sdk_gzip_exports_are_accepted,
    test_sdk_logs_are_stored_field_by_field,
    test_sdk_spans_are_stored_field_by_field,
    tracing,
    transport,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
# The receiver tests' other path: in-process mapping if the default maps in workers, else two.
OTHER_PATH = {"mapping_workers": 0 if IngestConfig().mapping_workers else 2}

__all__ = [  # collected here too, with this module's `herald` fixture
    "test_empty_request_is_a_plain_success",
    "test_malformed_body_is_400_or_invalid_argument",
    "test_metrics_are_answered_with_every_point_rejected",
    "test_one_invalid_span_is_a_partial_success_and_the_rest_is_stored",
    "test_otlp_json_with_hex_ids",
    "test_same_export_twice_is_stored_once",
    "test_sdk_gzip_exports_are_accepted",
    "test_sdk_logs_are_stored_field_by_field",
    "test_sdk_spans_are_stored_field_by_field",
    "tracing",
    "transport",
]


@pytest.fixture
def herald(db_path: Path) -> Iterator[Herald]:
    """A running server on the receiver tests' other path (overrides conftest's)."""
    with running_herald(test_config(db_path, ingest=OTHER_PATH)) as server:
        assert (server.mapping_pool is None) == (OTHER_PATH["mapping_workers"] == 0)
        yield server


class ServerOnLoop:
    """``running_herald`` with its loop at hand, so that a test can stop the server while
    requests are in flight."""

    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.herald = Herald(config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self.herald.start())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def close(self) -> None:
        self.run(self.herald.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def big_trace_request(spans: int, first_span: int = 1) -> ExportTraceServiceRequest:
    """One request of ``spans`` spans with a few attributes: seconds of mapping at 100k.
    Dated now: retention (7 days) would delete older spans while a test counts them."""
    start = time.time_ns()
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "bulk"))
    ss = rs.scope_spans.add()
    ss.scope.name = "bulk"
    for i in range(first_span, first_span + spans):
        span = ss.spans.add()
        span.trace_id = TRACE_ID
        span.span_id = i.to_bytes(8, "big")
        span.name = f"op-{i % 50}"
        span.start_time_unix_nano = start + i
        span.end_time_unix_nano = start + 500_000_000 + i
        span.attributes.extend([kv("http.route", f"/r/{i % 7}"), kv("user", str(i % 1000))])
    return request


def mixed_request() -> ExportTraceServiceRequest:
    """Good spans with bad ones between them: zero and short ids, a bad parent, a time out of
    range, an over-long span event name (kept without that event)."""
    start = time.time_ns()
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "mixed"))
    ss = rs.scope_spans.add()
    ss.scope.name = "mixed"
    for i in range(1, 41):
        span = ss.spans.add()
        span.trace_id = TRACE_ID
        span.span_id = (0x500 + i).to_bytes(8, "big")
        span.name = f"op-{i}"
        span.start_time_unix_nano = start + i
        span.end_time_unix_nano = start + 500_000_000 + i
        if i % 10 == 1:
            span.span_id = bytes(8)
        elif i % 10 == 3:
            span.span_id = b"\x01\x02"
        elif i % 10 == 5:
            span.parent_span_id = b"\x01"
        elif i % 10 == 7:
            span.end_time_unix_nano = 10  # 1970: before the range Herald accepts
        elif i % 10 == 9:
            span.events.add(name="x" * 2000, time_unix_nano=span.start_time_unix_nano)
            span.events.add(name="kept", time_unix_nano=span.start_time_unix_nano)
    return request


def export(herald: Herald, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
    """A gRPC trace export with room for a big request on a loaded machine."""
    with grpc.insecure_channel(herald.grpc_address) as channel:
        response: ExportTraceServiceResponse = TraceServiceStub(channel).Export(
            request, timeout=120
        )
        return response


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def ids_in(herald: Herald) -> set[str]:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        return {row[0] for row in cur.execute("SELECT id::VARCHAR FROM events").fetchall()}
    finally:
        cur.close()


# --- the same answers as in-process mapping ------------------------------------------------


def test_partial_success_and_stored_events_equal_in_process_mapping(tmp_path: Path) -> None:
    request = mixed_request()
    body = request.SerializeToString()
    answers: dict[int, list[Any]] = {}
    events: dict[int, set[str]] = {}
    for workers in (0, 2):
        config = test_config(tmp_path / f"{workers}.duckdb", ingest={"mapping_workers": workers})
        with running_herald(config) as herald:
            response = grpc_export(herald, request)
            reply = http_post(herald, "/v1/traces", body, PROTOBUF)
            assert reply.status_code == 200
            answers[workers] = [
                response.partial_success,
                ExportTraceServiceResponse.FromString(reply.content).partial_success,
            ]
            events[workers] = ids_in(herald)
    assert answers[2] == answers[0]
    partial = answers[2][0]
    assert partial.rejected_spans == 16
    assert "span_id must be 8 bytes" in partial.error_message
    assert "and 15 more" in partial.error_message  # 16 rejected + 4 dropped span events, 5 named
    assert events[2] == events[0] and len(events[2]) == 24 + 4  # the good spans + kept events


def test_arrow_columns_read_like_the_columns_they_were_built_from() -> None:
    """What the live tail and the automations read of a batch mapped in a worker."""
    cols = traces_to_events(mixed_request(), now_us(), Limits()).columns
    received = now_us()
    table = stamp_received(columns_to_arrow(cols, [0] * len(cols)), received)
    arrow = ArrowColumns(table)
    assert len(arrow) == len(cols) > 0
    for name in ("ids", "occurred_us", "names", "resource_ids", "resources", "related"):
        assert getattr(arrow, name) == getattr(cols, name), name
    assert arrow.payloads == cols.payloads and arrow.follows == cols.follows
    assert table.column("received").to_pylist()[0].timestamp() * 1e6 == pytest.approx(received)
    for i in (0, len(cols) - 1):
        assert arrow.received_event(i, received) == cols.received_event(i, received)
        assert arrow.view(i) == cols.view(i)
        assert wire_json(arrow, i, received) == wire_json(cols, i, received)
    assert isinstance(arrow, EventColumns)


def test_live_tail_gets_the_committed_spans_mapped_in_workers(db_path: Path) -> None:
    """The tail reads a worker-mapped batch through ArrowColumns: every stored span, as stored."""
    with running_herald(test_config(db_path, ingest={"mapping_workers": 2})) as herald:
        channel = grpc.insecure_channel(herald.grpc_address)
        request = herald_pb2.TailRequest(
            filter_json=orjson.dumps({"event": {"prefix": ["otel.span."]}}), backfill=False
        )
        call = herald_pb2_grpc.HeraldStub(channel).Tail(request)
        wait_for(lambda: herald.tail is not None and herald.tail.subscriber_count == 1)
        response = export(herald, mixed_request())
        spans = 40 - response.partial_success.rejected_spans
        got = [orjson.loads(next(call).event_json) for _ in range(spans)]
        with HeraldClient(herald.grpc_address) as client:
            for event in got:
                assert event == client.get(event["id"])
        assert {e["event"] for e in got} == {"otel.span.unset"}
        assert len({e["id"] for e in got}) == spans == 24
        call.cancel()
        channel.close()


def logging_to_arrow(cols: EventColumns, received_us: list[int]) -> pa.Table:
    """``columns_to_arrow`` that first logs an error with a traceback, as a mapping bug does
    (``MappingResult.fail``); runs in the worker, which imports it from this module."""
    try:
        raise RuntimeError("boom in the worker")
    except RuntimeError:
        logging.getLogger("collector.mapping.test").error("could not map a span", exc_info=True)
    return columns_to_arrow(cols, received_us)


def test_what_a_worker_logs_is_logged_by_the_server(caplog: pytest.LogCaptureFixture) -> None:
    pool = MappingPool(1, logging_to_arrow, max_queued_bytes=1 << 20)
    try:
        body = big_trace_request(3).SerializeToString()
        mapped = asyncio.run(pool.map("traces", body, now_us(), Limits()))
    finally:
        pool.close()
    assert mapped.rows == 3
    [record] = [r for r in caplog.records if r.name == "collector.mapping.test"]
    assert record.levelno == logging.ERROR and record.getMessage() == "could not map a span"
    assert record.process != os.getpid()  # logged in the worker, handled here
    assert record.exc_text and "RuntimeError: boom in the worker" in record.exc_text


# --- failures only a pool has --------------------------------------------------------------


def test_a_worker_killed_mid_request_is_a_retryable_answer_and_nothing_is_lost(
    db_path: Path,
) -> None:
    with running_herald(test_config(db_path, ingest={"mapping_workers": 1})) as herald:
        pool = herald.mapping_pool
        assert pool is not None
        pool.start()
        [pid] = pool.worker_pids()
        request = big_trace_request(20_000)
        result: list[Any] = []

        def send() -> None:
            try:
                result.append(export(herald, request))
            except grpc.RpcError as exc:
                result.append(exc)

        sender = threading.Thread(target=send)
        before = cpu_ticks(pid)
        sender.start()
        # The worker is mapping once the request is in the pool and the worker burns CPU.
        wait_for(lambda: pool.queued_requests == 1 and cpu_ticks(pid) > before + 5)
        os.kill(pid, signal.SIGKILL)
        sender.join(60)
        [answer] = result
        assert isinstance(answer, grpc.RpcError)
        assert answer.code() == grpc.StatusCode.UNAVAILABLE  # OTLP senders retry this
        assert "mapping worker exited" in (answer.details() or "")
        trailers = {m.key: m.value for m in answer.trailing_metadata()}
        details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details
        assert details[0].Unpack(error_details_pb2.RetryInfo())
        assert stored(herald) == 0  # nothing of it was acknowledged, nothing was stored
        wait_for(lambda: not alive(pid))
        # The retry gets a new worker and stores every span.
        retried = export(herald, request)
        assert not retried.HasField("partial_success"), retried.partial_success
        assert stored(herald) == 20_000
        assert pool.worker_pids() and pid not in pool.worker_pids()
        assert pool.queued_requests == 0


def test_a_worker_that_died_idle_is_replaced_before_the_next_request(db_path: Path) -> None:
    with running_herald(test_config(db_path, ingest={"mapping_workers": 1})) as herald:
        pool = herald.mapping_pool
        assert pool is not None
        pool.start()
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid))
        request = big_trace_request(10)
        assert not export(herald, request).HasField("partial_success")
        reply = http_post(herald, "/v1/logs", logs_request("after").SerializeToString(), PROTOBUF)
        assert reply.status_code == 200
        assert stored(herald) == 11
        assert pool.worker_pids() and pid not in pool.worker_pids()


def test_a_full_pool_answers_busy_before_queueing(db_path: Path) -> None:
    config = test_config(db_path, ingest={"mapping_workers": 1, "mapping_queue_bytes": 1000})
    with running_herald(config) as herald:
        pool = herald.mapping_pool
        assert pool is not None
        pool.start()
        [pid] = pool.worker_pids()
        big = big_trace_request(20_000)  # over the byte budget, let in: the pool is empty
        result: list[Any] = []
        sender = threading.Thread(target=lambda: result.append(export(herald, big)))
        before = cpu_ticks(pid)
        sender.start()
        wait_for(lambda: pool.queued_requests == 1 and cpu_ticks(pid) > before + 5)
        small = big_trace_request(3, first_span=100_001)
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(herald, small)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "mapping workers are busy" in (info.value.details() or "")
        reply = http_post(herald, "/v1/logs", logs_request("x").SerializeToString(), PROTOBUF)
        assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
        sender.join(60)
        assert not result[0].HasField("partial_success")
        assert stored(herald) == 20_000
        grpc_export(herald, small)  # the retry goes through
        assert stored(herald) == 20_003


def test_shutdown_with_busy_workers_answers_every_request_and_ends_the_workers(
    db_path: Path,
) -> None:
    config = test_config(
        db_path, ingest={"mapping_workers": 2}, server={"shutdown_grace_seconds": 60}
    )
    server = ServerOnLoop(config)
    herald = server.herald
    try:
        pool = herald.mapping_pool
        assert pool is not None
        pool.start()
        pids = pool.worker_pids()
        assert len(pids) == 2
        requests = [big_trace_request(5_000, first_span=1 + k * 5_000) for k in range(4)]
        results: list[Any] = []
        lock = threading.Lock()

        def send(request: ExportTraceServiceRequest) -> None:
            try:
                answer: Any = export(herald, request)
            except grpc.RpcError as exc:
                answer = exc
            with lock:
                results.append(answer)

        senders = [threading.Thread(target=send, args=(r,)) for r in requests]
        for sender in senders:
            sender.start()
        wait_for(lambda: pool.queued_requests == 4)
    finally:
        server.close()  # SIGTERM's path: drain the receivers, then the pool, then the writer
    for sender in senders:
        sender.join(60)
    assert len(results) == 4
    acknowledged = sum(5_000 for r in results if isinstance(r, ExportTraceServiceResponse))
    assert acknowledged == 20_000  # every request in the pool when the stop began was served
    assert all(not alive(pid) for pid in pids)  # no orphan workers
    # Every acknowledged span is in the file.
    with running_herald(test_config(db_path)) as reopened:
        assert stored(reopened) == acknowledged


def descendants(pid: int) -> list[int]:
    """Processes below ``pid`` (a server's forkserver, its workers, the resource tracker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_a_served_process(tmp_path: Path, stop: str) -> None:
    """`herald serve` with its default workers: a SIGTERM drains and ends them; a server that
    is killed outright takes them with it (each worker watches its server)."""
    env = {"HERALD_INGEST__MAPPING_WORKERS": "2"}
    with serve_process(*ports_zero(tmp_path / "served.duckdb"), env=env) as served:
        with grpc.insecure_channel(served.grpc) as channel:
            response = TraceServiceStub(channel).Export(big_trace_request(50), timeout=60)
        assert not response.HasField("partial_success")
        below = descendants(served.proc.pid)
        assert len(below) >= 3  # the forkserver and two workers (and its resource tracker)
        if stop == "SIGTERM":
            served.sigterm()
        else:
            served.proc.kill()
            served.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in below))
