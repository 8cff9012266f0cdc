"""A caller that gives up while its batch waits in the writer's queue (a client that
disconnects, a request cancelled by its deadline): the writer thread must carry on — it used to
call ``set_result``/``set_exception`` on the cancelled future, which raised
``InvalidStateError`` in the writer thread and ended it, so no later request was ever committed.

The batches wait behind a job held on the writer thread (``BatchWriter.call``), on a real
DuckDB file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import datetime_to_us
from collector.domain.ids import uuid7_str
from collector.errors import InvalidInput, StoreError
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter


def _columns(n: int, event_id: str | None = None) -> EventColumns:
    cols = EventColumns()
    for i in range(n):
        cols.append(
            event_id or uuid7_str(),
            datetime_to_us(datetime.now(UTC)),
            "cancel.test",
            {"prefect.resource.id": f"svc.{i}"},
            [],
            "{}",
        )
    return cols


class _HeldWriter:
    """A started writer whose thread is held by a job until ``release``; thread errors
    (an exception ending the writer thread) are collected."""

    def __init__(self, path: Path) -> None:
        self.store = EventStore(path)
        self.writer = BatchWriter(self.store, batch_max_events=1000, queue_max_events=10_000)
        self.thread_errors: list[BaseException | None] = []
        self._previous = threading.excepthook
        threading.excepthook = lambda args: self.thread_errors.append(args.exc_value)
        self._release = threading.Event()
        started = threading.Event()

        def hold() -> bool:
            started.set()
            return self._release.wait(30)

        self.writer.start()
        self.held: Future[bool] = self.writer.call(hold)
        assert started.wait(10), "the writer did not take the holding job"

    def release(self) -> None:
        self._release.set()
        assert self.held.result(timeout=10) is True

    def close(self) -> None:
        self._release.set()
        self.writer.stop()
        self.store.close()
        threading.excepthook = self._previous

    def count(self) -> int:
        cur = self.store.cursor()
        try:
            row = cur.execute("SELECT count(*) FROM events").fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0


@pytest.fixture
def held(tmp_path: Path) -> Iterator[_HeldWriter]:
    h = _HeldWriter(tmp_path / "cancel.duckdb")
    try:
        yield h
    finally:
        h.close()


def test_a_batch_cancelled_while_queued_leaves_the_writer_running(held: _HeldWriter) -> None:
    kept = held.writer.submit_nowait(_columns(3))
    given_up = held.writer.submit_nowait(_columns(4))
    assert given_up.cancel()  # still queued: its caller gives up
    held.release()
    assert kept.result(timeout=10) == 3
    # The writer is alive and commits what comes next.
    assert held.writer.submit_nowait(_columns(2)).result(timeout=10) == 2
    assert held.writer.alive
    assert held.thread_errors == []
    assert held.count() == 5  # the cancelled batch was not committed


def test_a_cancelled_batch_with_refused_data_leaves_the_writer_running(
    held: _HeldWriter,
) -> None:
    # The refused data's error would go to the cancelled future: nobody to tell.
    bad = EventColumns()
    bad.append(uuid7_str(), 2**63 + 5, "cancel.test", {"prefect.resource.id": "x"}, [], "{}")
    given_up = held.writer.submit_nowait(bad)
    kept = held.writer.submit_nowait(_columns(3))
    assert given_up.cancel()
    held.release()
    assert kept.result(timeout=10) == 3
    refused = held.writer.submit_nowait(bad)
    with pytest.raises(InvalidInput):
        refused.result(timeout=10)
    assert held.writer.submit_nowait(_columns(1)).result(timeout=10) == 1
    assert held.thread_errors == []


def test_an_asyncio_caller_cancelled_while_its_batch_waits(held: _HeldWriter) -> None:
    """What a server handler does: ``await writer.submit`` — cancelled when its client goes."""

    async def scenario() -> int:
        waiting = asyncio.ensure_future(held.writer.submit(_columns(5)))
        other = asyncio.ensure_future(held.writer.submit(_columns(2)))
        await asyncio.sleep(0)  # both queued
        while held.writer.queued_events < 7:
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        held.release()
        return await asyncio.wait_for(other, 10)

    assert asyncio.run(scenario()) == 2
    assert held.writer.submit_nowait(_columns(1)).result(timeout=10) == 1
    assert held.writer.alive
    assert held.thread_errors == []


def test_an_unforeseen_error_in_one_batch_fails_that_batch_not_the_writer(
    held: _HeldWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen while profiling: pyarrow raised AttributeError from its pandas shim while building
    # a batch — not one of the errors the writer expected, so it ended the writer thread and
    # every later request waited for an answer that never came (clients hit their deadlines).
    from collector.store.arrow_batch import columns_to_arrow as real

    poisoned: list[EventColumns] = []

    def flaky(cols: EventColumns, received_us: list[int]) -> object:
        if cols in poisoned:
            raise AttributeError("'NoneType' object has no attribute '__version__'")
        return real(cols, received_us)

    monkeypatch.setattr("collector.store.writer.columns_to_arrow", flaky)
    bad = _columns(4)
    poisoned.append(bad)
    failing = held.writer.submit_nowait(bad)
    kept = held.writer.submit_nowait(_columns(3))
    held.release()
    with pytest.raises(StoreError, match="could not be prepared"):
        failing.result(timeout=10)
    assert kept.result(timeout=10) == 3
    assert held.writer.submit_nowait(_columns(2)).result(timeout=10) == 2
    assert held.writer.alive
    assert held.thread_errors == []
    assert held.count() == 5
