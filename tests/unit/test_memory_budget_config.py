"""``server.memory_budget_bytes``: the keys it derives (unset or 0), the ones set explicitly,
its validation; and the two byte bounds it feeds — the ingest queue (``storage.queue_max_bytes``)
and a live-tail subscriber's buffer (``query.tail_buffer_bytes``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collector.config import (
    DEFAULT_MEMORY_BUDGET,
    MiB,
    QueryConfig,
    ServerConfig,
    StorageConfig,
    budget_parts,
    load_config,
)
from collector.domain.columns import EventColumns
from collector.domain.filters import EventFilter
from collector.errors import Busy, ConfigError
from collector.pipeline.tail import Subscription
from collector.store.duckdb_store import EventStore
from collector.store.writer import BatchWriter, approx_bytes


def test_defaults_are_the_default_budgets_shares() -> None:
    config = load_config(None, env={})
    assert config.server.memory_budget_bytes == DEFAULT_MEMORY_BUDGET == 300 * MiB
    assert config.server.max_inflight_bytes == 75 * MiB  # a quarter, >= max_receive_bytes
    assert config.storage.queue_max_bytes == 300 * MiB // 16
    assert config.storage.checkpoint_wal_bytes == 75 * MiB
    assert config.query.sql_memory_limit == 64 * MiB  # a fifth (60 MiB), at least 64 MiB
    assert config.query.tail_buffer_bytes == MiB  # 300 MiB / 16 / 100 subscribers, at least 1 MiB


def test_a_larger_budget_grows_every_part_it_derives() -> None:
    env = {"HERALD_SERVER__MEMORY_BUDGET_BYTES": "2GiB"}
    config = load_config(None, env=env)
    assert config.server.memory_budget_bytes == 2048 * MiB
    assert config.server.max_inflight_bytes == 512 * MiB
    assert config.storage.queue_max_bytes == 128 * MiB
    assert config.storage.checkpoint_wal_bytes == 512 * MiB
    assert config.query.sql_memory_limit == 2048 * MiB // 5
    assert config.query.tail_buffer_bytes == 128 * MiB // 100


def test_a_key_set_explicitly_is_kept_and_zero_means_derived(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\nmemory_budget_bytes = "1GiB"\nmax_inflight_bytes = 0\n'
        "[storage]\ncheckpoint_wal_bytes = 8388608\nqueue_max_bytes = 0\n"
        '[query]\nsql_memory_limit = "512MiB"\n'
    )
    config = load_config(path, env={"HERALD_QUERY__TAIL_BUFFER_BYTES": "4096"})
    assert config.storage.checkpoint_wal_bytes == 8 * MiB  # explicit
    assert config.query.sql_memory_limit == 512 * MiB  # explicit, as a size string
    assert config.query.tail_buffer_bytes == 4096  # explicit, from the environment
    assert config.storage.queue_max_bytes == 64 * MiB  # 0: derived from the 1 GiB
    assert config.server.max_inflight_bytes == 256 * MiB  # 0: derived


def test_in_flight_bytes_derived_never_below_the_largest_request() -> None:
    env = {"HERALD_SERVER__MAX_RECEIVE_BYTES": str(200 * MiB)}
    assert load_config(None, env=env).server.max_inflight_bytes == 200 * MiB
    parts = budget_parts(256 * MiB, max_receive_bytes=4 * MiB, max_tail_subscribers=10)
    assert parts["server"]["max_inflight_bytes"] == 64 * MiB


def test_a_section_built_alone_takes_the_default_budgets_share_for_zero() -> None:
    assert StorageConfig(checkpoint_wal_bytes=0).checkpoint_wal_bytes == 75 * MiB
    assert QueryConfig(sql_memory_limit=0).sql_memory_limit == 64 * MiB
    assert ServerConfig(max_inflight_bytes=0).max_inflight_bytes == 75 * MiB


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HERALD_SERVER__MEMORY_BUDGET_BYTES": "100MiB"}, r"server\.memory_budget_bytes"),
        ({"HERALD_SERVER__MEMORY_BUDGET_BYTES": "lots"}, r"server\.memory_budget_bytes"),
        ({"HERALD_STORAGE__QUEUE_MAX_BYTES": "-1"}, r"storage\.queue_max_bytes"),
        ({"HERALD_QUERY__TAIL_BUFFER_BYTES": "-5"}, r"query\.tail_buffer_bytes"),
        ({"HERALD_QUERY__SQL_MEMORY_LIMIT": "1MiB"}, r"query\.sql_memory_limit"),
        (
            {"HERALD_SERVER__MAX_INFLIGHT_BYTES": str(MiB)},
            r"max_inflight_bytes .* must be at least server\.max_receive_bytes",
        ),
    ],
)
def test_bad_budget_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env=env)


def _columns(n: int, payload: str) -> EventColumns:
    columns = EventColumns()
    for i in range(n):
        columns.append(
            id=f"00000000-0000-4000-8000-{i:012x}",
            occurred_us=1_700_000_000_000_000 + i,
            name="budget.test",
            resource={"prefect.resource.id": "budget.test.1"},
            related=[],
            payload_json=payload,
        )
    return columns


def test_the_ingest_queue_answers_busy_past_its_bytes(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "q.duckdb")
    batch = _columns(100, '{"text":"' + "x" * 2000 + '"}')
    size = approx_bytes(batch)
    # Not started: nothing is committed, so the queue only fills.
    writer = BatchWriter(
        store, batch_max_events=10_000, queue_max_events=10_000, queue_max_bytes=2 * size + 1
    )
    try:
        writer.submit_nowait(batch)
        writer.submit_nowait(batch)
        with pytest.raises(Busy, match="ingest queue is full") as caught:
            writer.submit_nowait(batch)  # by bytes: 300 events are far below 10,000
        assert caught.value.retry_after > 0
        assert writer.queued_events == 200
        # One batch larger than the whole queue still goes in alone, so it cannot starve.
        lone = BatchWriter(store, batch_max_events=10, queue_max_events=10, queue_max_bytes=1)
        lone.submit_nowait(batch)
        assert lone.queued_events == 100
    finally:
        writer.start()
        writer.stop()  # commits what was queued
        store.close()


def test_a_tail_subscriber_buffer_is_bounded_in_bytes_and_reports_the_rest_lagged() -> None:
    async def run() -> None:
        sub = Subscription(EventFilter(), 1000, asyncio.get_running_loop(), buffer_bytes=10_000)
        items = [(f"id-{i}", b"x" * 3000) for i in range(5)]
        sub.offer(items)
        got = [await sub.next_json() for _ in range(4)]
        assert got[0] == ("lagged", 2)  # 3 x 3000 bytes fit, 2 did not
        assert [item for kind, item in got[1:]] == [b"x" * 3000] * 3
        # Drained: room again.
        sub.offer([("id-9", b"y" * 9000)])
        assert await sub.next_json() == ("event", b"y" * 9000)

    asyncio.run(run())
