"""Binding rules, backpressure and shutdown of a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.domain.columns import EventColumns
from collector.domain.ids import uuid7_str
from collector.errors import Busy, ConfigError
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter
from collector.testing import running_herald, test_config


def test_non_loopback_bind_without_tokens_is_refused(db_path: Path) -> None:
    config = test_config(db_path, server={"grpc": "0.0.0.0:0"})
    with pytest.raises(ConfigError, match="--insecure"):
        asyncio.run(Herald(config).start())


def test_non_loopback_bind_with_insecure_is_allowed(db_path: Path) -> None:
    config = test_config(db_path, server={"grpc": "0.0.0.0:0", "insecure": True})
    with running_herald(config) as herald:
        assert herald.grpc_address.startswith("0.0.0.0:")


def test_events_survive_a_restart(db_path: Path) -> None:
    config = test_config(db_path)
    event_id = uuid7_str()
    event = {"event": "a.b", "resource": {"prefect.resource.id": "r"}, "id": event_id}
    with running_herald(config) as herald:
        assert (
            httpx.post(f"http://{herald.http_address}/api/events", json=[event]).status_code == 204
        )
    with running_herald(config) as herald:
        assert herald.store is not None
        assert herald.store.get_event(event_id) is not None


def _columns(n: int) -> EventColumns:
    cols = EventColumns()
    for i in range(n):
        cols.append(
            f"0193a000-0000-7000-8000-{i:012d}", 0, "x", {"prefect.resource.id": "r"}, [], "{}"
        )
    return cols


def test_full_queue_answers_busy_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.duckdb")
    writer = BatchWriter(store, batch_max_events=10, queue_max_events=20)
    writer.start()
    with store._write_lock:  # hold the writer inside its commit so the queue stays full
        first = writer.submit_nowait(_columns(10))
        second = writer.submit_nowait(_columns(10))
        with pytest.raises(Busy) as info:
            writer.submit_nowait(_columns(1))
        assert info.value.retry_after > 0
        assert not first.done() and not second.done()  # not acknowledged before commit
    assert first.result(5) == 10 and second.result(5) == 10
    writer.stop()
    assert store.count_events() == 10  # the same ids twice: stored once


def test_busy_is_unavailable_with_retry_info_and_503(db_path: Path) -> None:
    config = test_config(db_path, storage={"queue_max_events": 1, "batch_max_events": 1})
    with running_herald(config) as herald:
        assert herald.writer is not None and herald.store is not None
        body = b'[{"event":"a","resource":{"prefect.resource.id":"r"}}]'
        with herald.store._write_lock:  # the writer blocks in its commit; the queue is full
            pending = herald.writer.submit_nowait(_columns(1))
            with grpc.insecure_channel(herald.grpc_address) as channel:
                stub = herald_pb2_grpc.HeraldStub(channel)
                with pytest.raises(grpc.RpcError) as info:
                    stub.Emit(herald_pb2.EmitRequest(events_json=body))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            trailers = {m.key: m.value for m in info.value.trailing_metadata()}
            details = trailers["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry) and retry.retry_delay.seconds >= 1
            reply = httpx.post(f"http://{herald.http_address}/api/events", content=body)
            assert reply.status_code == 503
            assert int(reply.headers["Retry-After"]) >= 1
        assert pending.result(5) == 1
        assert herald.store.count_events() == 1
