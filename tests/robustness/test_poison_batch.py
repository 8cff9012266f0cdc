"""Poison in a shared group commit: one request's bad data fails that request alone, with an error
that says "do not retry", while every request that shared its commit is committed (issue 8,
item 3, the writer half; /work/shared/reference/robustness.md "Poison in a shared batch").

The edge validates times (tests/robustness/test_poison_items.py); these tests put the poison
*below* the edge, straight onto ``herald.writer``, so that they hold whatever the edge lets
through: a value DuckDB refuses (an id that is no UUID), one Arrow cannot convert (an
``occurred`` past int64) and one no reader could hand back (an ``occurred`` past year 9999).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import grpc
import httpx
import orjson
import pytest

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.domain.columns import EventColumns
from collector.domain.ids import uuid7_str
from collector.errors import InvalidInput
from collector.testing import running_herald, test_config

GOOD_SECONDS = 3.0
GOOD_BATCH = 20


def _event(name: str) -> dict[str, object]:
    return {
        "id": uuid7_str(),
        "event": name,
        "occurred": datetime.now(UTC).isoformat(),
        "resource": {"prefect.resource.id": f"{name}.resource"},
        "payload": {"n": 1},
    }


def _poison(kind: str) -> EventColumns:
    cols = EventColumns()
    occurred = {
        "not-a-uuid": time.time_ns() // 1000,
        "past-int64": 2**70,
        "year-10889": 0xFFFFFFFFFFFF * 1000,
    }[kind]
    cols.append(
        "not-a-uuid" if kind == "not-a-uuid" else uuid7_str(),
        occurred,
        "hostile.poison",
        {"prefect.resource.id": "hostile"},
        [],
        "{}",
    )
    return cols


@dataclass
class Client:
    """One good client: posts batches until told to stop, recording what was acknowledged."""

    name: str
    send: Callable[[list[dict[str, object]]], bool]
    acked: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            batch = [_event(f"good.{self.name}") for _ in range(GOOD_BATCH)]
            self.requests += 1
            try:
                ok = self.send(batch)
            except Exception as exc:  # a failure of any kind counts
                self.failures.append(repr(exc))
                continue
            if ok:
                self.acked.update(str(e["id"]) for e in batch)
            else:
                self.failures.append("refused")


Sender = Callable[[list[dict[str, object]]], bool]


def _http_sender(herald: Herald, failures: list[str], closing: ExitStack) -> Sender:
    client = closing.enter_context(
        httpx.Client(base_url=f"http://{herald.http_address}", timeout=30)
    )

    def send(batch: list[dict[str, object]]) -> bool:
        resp = client.post("/api/events", content=orjson.dumps(batch))
        if resp.status_code != 204:
            failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return resp.status_code == 204

    return send


def _grpc_sender(herald: Herald, failures: list[str], closing: ExitStack) -> Sender:
    channel = closing.enter_context(grpc.insecure_channel(herald.grpc_address))
    stub = herald_pb2_grpc.HeraldStub(channel)

    def send(batch: list[dict[str, object]]) -> bool:
        try:
            resp = stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps(batch)), timeout=30)
        except grpc.RpcError as exc:
            failures.append(f"gRPC {exc.code()}: {exc.details()}")
            return False
        if resp.errors or resp.accepted != len(batch):
            failures.append(f"Emit: {resp.accepted} accepted, errors {list(resp.errors)}")
            return False
        return True

    return send


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Herald]:
    with running_herald(test_config(tmp_path / "poison.duckdb")) as herald:
        yield herald


@pytest.fixture
def good_clients(served: Herald) -> Iterator[list[Client]]:
    """Four good clients, two over HTTP and two over gRPC; their connections closed after."""
    with ExitStack() as closing:
        clients: list[Client] = []
        for i in range(4):
            c = Client(name=f"c{i}", send=lambda b: True)
            c.send = (_http_sender if i % 2 == 0 else _grpc_sender)(
                herald=served, failures=c.failures, closing=closing
            )
            clients.append(c)
        yield clients


def _stored_ids(herald: Herald) -> set[str]:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        rows = cur.execute("SELECT id::VARCHAR FROM events WHERE event LIKE 'good.%'").fetchall()
    finally:
        cur.close()
    return {r[0] for r in rows}


@pytest.mark.parametrize("kind", ["not-a-uuid", "past-int64", "year-10889"])
def test_poison_sharing_a_group_commit_fails_only_its_own_request(
    served: Herald, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer, store = served.writer, served.store
    assert writer is not None and store is not None
    good_before = EventColumns()
    good_after = EventColumns()
    ids = [uuid7_str(), uuid7_str()]
    for cols, event_id in ((good_before, ids[0]), (good_after, ids[1])):
        cols.append(
            event_id, time.time_ns() // 1000, "good.shared", {"prefect.resource.id": "g"}, [], "{}"
        )
    caplog.set_level(logging.WARNING, logger="collector.store.writer")
    # Holding the write lock keeps the writer inside (or before) a commit while the three
    # requests queue up: whichever way it groups them, the poison shares a commit with at least
    # one good request.
    with store._write_lock:
        futures: list[Future[int]] = [
            writer.submit_nowait(good_before),
            writer.submit_nowait(_poison(kind)),
            writer.submit_nowait(good_after),
        ]
        time.sleep(0.2)  # not for readiness: gives the writer time to pick a group (any group)
    assert futures[0].result(timeout=10) == 1
    assert futures[2].result(timeout=10) == 1
    err = futures[1].exception(timeout=10)
    assert isinstance(err, InvalidInput), repr(err)  # 400 / INVALID_ARGUMENT: not retried
    if kind == "not-a-uuid":  # refused by DuckDB inside the shared commit, then isolated
        assert "committing each alone" in caplog.text
    stored = {
        r[0]
        for r in store.cursor()
        .execute("SELECT id::VARCHAR FROM events WHERE event = 'good.shared'")
        .fetchall()
    }
    assert stored == set(ids)
    assert (
        store.cursor().execute("SELECT count(*) FROM events WHERE event = 'hostile.poison'")
    ).fetchone() == (0,)


def _event_columns(name: str) -> EventColumns:
    cols = EventColumns()
    cols.append(uuid7_str(), time.time_ns() // 1000, name, {"prefect.resource.id": "g"}, [], "{}")
    return cols


def test_four_good_clients_never_fail_next_to_a_writer_level_poisoner(
    served: Herald, good_clients: list[Client]
) -> None:
    writer = served.writer
    assert writer is not None
    clients = good_clients
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
    for t in threads:
        t.start()
    poison_errors: list[BaseException | None] = []
    kinds = ["not-a-uuid", "past-int64", "year-10889"]
    deadline = time.monotonic() + GOOD_SECONDS
    i = 0
    try:
        while time.monotonic() < deadline:
            fut = writer.submit_nowait(_poison(kinds[i % len(kinds)]))
            poison_errors.append(fut.exception(timeout=30))
            i += 1
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    for c in clients:
        assert c.failures == [], f"{c.name}: {c.failures[:3]}"
        assert c.requests > 0
    assert poison_errors and all(isinstance(e, InvalidInput) for e in poison_errors)
    acked = set().union(*(c.acked for c in clients))
    assert acked and _stored_ids(served) == acked


def _far_future_uuid7() -> str:
    # The largest 48-bit millisecond time a UUIDv7 can carry: year 10889.
    raw = (0xFFFFFFFFFFFF << 80) | (0x7 << 76) | (0x2 << 62) | uuid.uuid4().int & ((1 << 62) - 1)
    return str(uuid.UUID(int=raw))


def test_far_future_uuid7_through_the_api_is_a_4xx_for_its_sender_only(
    served: Herald, good_clients: list[Client]
) -> None:
    clients = good_clients
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
    for t in threads:
        t.start()
    closing = ExitStack()
    http = closing.enter_context(httpx.Client(base_url=f"http://{served.http_address}", timeout=30))
    stub = herald_pb2_grpc.HeraldStub(
        closing.enter_context(grpc.insecure_channel(served.grpc_address))
    )
    statuses: list[int] = []
    codes: list[grpc.StatusCode | str] = []
    deadline = time.monotonic() + GOOD_SECONDS
    try:
        while time.monotonic() < deadline:
            hostile = [
                {
                    "id": _far_future_uuid7(),
                    "event": "hostile.future",
                    "resource": {"prefect.resource.id": "hostile"},
                }
            ]
            statuses.append(http.post("/api/events", content=orjson.dumps(hostile)).status_code)
            try:
                resp = stub.Emit(herald_pb2.EmitRequest(events_json=orjson.dumps(hostile)))
                codes.append("per-item error" if resp.errors else "accepted")
            except grpc.RpcError as exc:
                codes.append(exc.code())
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        closing.close()
    for c in clients:
        assert c.failures == [], f"{c.name}: {c.failures[:3]}"
    assert statuses and all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert codes and all(
        c in ("per-item error", grpc.StatusCode.INVALID_ARGUMENT) for c in codes
    ), set(codes)
    acked = set().union(*(c.acked for c in clients))
    assert acked and _stored_ids(served) == acked
    assert served.store is not None
    assert served.store.cursor().execute(
        "SELECT count(*) FROM events WHERE event = 'hostile.future'"
    ).fetchone() == (0,)


def test_store_refuses_a_bad_batch_without_storing_any_of_it(tmp_path: Path) -> None:
    with running_herald(test_config(tmp_path / "one.duckdb")) as herald:
        assert herald.writer is not None
        cols = _poison("not-a-uuid")
        good_id = uuid7_str()
        cols.append(
            good_id, time.time_ns() // 1000, "good.mixed", {"prefect.resource.id": "g"}, [], "{}"
        )
        err = herald.writer.submit_nowait(cols).exception(timeout=10)
        assert isinstance(err, InvalidInput)
    conn = duckdb.connect(str(tmp_path / "one.duckdb"), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        conn.close()
