"""Health, readiness and self-metrics on a real server: /healthz and /readyz open to anyone,
/metrics with the read scope, scraped over HTTP and parsed with prometheus-client's own text
parser; every counter checked against what the test did to the server (ingest of each signal,
invalid items, duplicates, a full queue, a live tail, SQL, an automation calling a real
webhook, retention and its checkpoint); readiness going 503 when the writer stops; two servers
in one process keeping separate numbers; ``herald status`` and ``herald --version``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cli.main import app as cli_app
from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.client.automations import AutomationsClient
from collector.client.remote import HeraldClient
from collector.domain.events import format_time
from collector.domain.ids import uuid7_str
from collector.errors import Busy, InvalidInput
from collector.testing import running_herald, test_config, wait_for, webhook_receiver
from collector.version import herald_version

INGEST_TOKEN = "health-ingest-token"
READ_TOKEN = "health-read-token"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(herald: Herald, token: str | None = None) -> Samples:
    """GET /metrics, parsed by prometheus-client's parser: (name, labels) → value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(f"http://{herald.http_address}/metrics", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (fails if the server does not expose it)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in the scrape"
    return samples[key]


def scrape_until(herald: Herald, done: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``done`` holds for the samples, and return them."""
    found: list[Samples] = []

    def check() -> bool:
        found[:] = [scrape(herald)]
        return done(found[0])

    wait_for(check, what=what)
    return found[0]


def event(name: str = "test.thing.happened", occurred: datetime | None = None) -> dict[str, Any]:
    return {
        "event": name,
        "occurred": format_time(occurred or datetime.now(UTC)),
        "resource": {"prefect.resource.id": "test.resource.1"},
        "id": uuid7_str(),
    }


def post_events(herald: Herald, events: list[Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"http://{herald.http_address}/api/events", json=events, headers=headers, timeout=10
    )


def spans_request(n: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    now = int(datetime.now(UTC).timestamp() * 1e9)
    for i in range(n):
        span = spans.add(
            trace_id=bytes([1] * 16), span_id=(i + 1).to_bytes(8, "big"), name=f"op{i}"
        )
        span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1000
    bad = spans.add(trace_id=b"", span_id=b"", name="no ids")  # rejected by the mapping
    bad.start_time_unix_nano = now
    return request


def metrics_request(points: int) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    metrics.append(
        Metric(
            name="m", gauge=Gauge(data_points=[NumberDataPoint(as_int=i) for i in range(points)])
        )
    )
    return request


def post_otlp(herald: Herald, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"http://{herald.http_address}{path}",
        content=body,
        headers={
            "Content-Type": "application/x-protobuf",
            "Authorization": f"Bearer {INGEST_TOKEN}",
        },
        timeout=10,
    )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Herald]:
    tokens = [
        {"token": INGEST_TOKEN, "scopes": ["ingest"]},
        {"token": READ_TOKEN, "scopes": ["read"]},
    ]
    with running_herald(test_config(tmp_path / "h.duckdb", auth={"tokens": tokens})) as server:
        yield server


def test_health_and_readiness_need_no_token_and_name_the_version(secured: Herald) -> None:
    base = f"http://{secured.http_address}"
    alive = httpx.get(f"{base}/healthz", timeout=10)
    assert alive.status_code == 200
    assert alive.json() == {"status": "alive", "version": herald_version()}
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, what="ready")
    ready = httpx.get(f"{base}/readyz", timeout=10).json()
    assert ready == {
        "status": "ready",
        "version": herald_version(),
        "checks": {"store": "ok", "writer": "ok", "evaluator": "ok", "draining": "ok"},
    }
    assert herald_version() != "0+unknown"  # the installed distribution's version

    # /metrics is a read: no token, a token without the read scope, then one with it.
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
    wrong = httpx.get(
        f"{base}/metrics", headers={"Authorization": f"Bearer {INGEST_TOKEN}"}, timeout=10
    )
    assert wrong.status_code == 403
    assert "read" in wrong.json()["detail"]
    samples = scrape(secured, READ_TOKEN)
    assert value(samples, "herald_build_info", version=herald_version()) == 1
    assert value(samples, "process_resident_memory_bytes") > 0


def test_ingest_counts_per_signal_reason_and_duplicates(secured: Herald) -> None:
    before = scrape(secured, READ_TOKEN)
    assert value(before, "herald_items_received_total", signal="events") == 0

    good = [event() for _ in range(3)]
    reply = post_events(secured, [*good, {"event": "no resource"}], INGEST_TOKEN)
    assert reply.status_code == 422  # 3 stored, one refused
    assert post_events(secured, good, INGEST_TOKEN).status_code == 204  # re-sent: duplicates
    assert post_otlp(secured, "/v1/traces", spans_request(4).SerializeToString()).status_code == 200
    metrics_reply = post_otlp(secured, "/v1/metrics", metrics_request(5).SerializeToString())
    assert metrics_reply.status_code == 200

    s = scrape(secured, READ_TOKEN)
    assert value(s, "herald_items_received_total", signal="events") == 7
    assert value(s, "herald_items_stored_total", signal="events") == 6
    assert value(s, "herald_items_rejected_total", signal="events", reason="invalid") == 1
    assert value(s, "herald_items_received_total", signal="spans") == 5
    assert value(s, "herald_items_stored_total", signal="spans") == 4
    assert value(s, "herald_items_rejected_total", signal="spans", reason="invalid") == 1
    assert value(s, "herald_items_received_total", signal="metrics") == 5
    assert value(s, "herald_items_stored_total", signal="metrics") == 0
    assert value(s, "herald_items_rejected_total", signal="metrics", reason="not_stored") == 5
    # 3 + 3 + 4 committed; the second 3 were already stored.
    assert value(s, "herald_dedupe_hits_total") == 3
    assert value(s, "herald_events_inserted_total") == 7
    assert value(s, "herald_group_commit_events_count") == 3
    assert value(s, "herald_group_commit_events_sum") == 10
    assert value(s, "herald_group_commit_seconds_count") == 3
    assert 0 < value(s, "herald_group_commit_seconds_sum") < 30
    assert value(s, "herald_busy_answers_total", reason="ingest_queue") == 0


def test_a_full_queue_is_counted_busy_and_its_depth_is_seen(tmp_path: Path) -> None:
    config = test_config(tmp_path / "q.duckdb", storage={"queue_max_events": 3})
    with running_herald(config) as herald:
        writer = herald.writer
        assert writer is not None
        # The writer thread is held by a job of its own, so what is queued stays queued.
        release, holding = threading.Event(), threading.Event()

        def hold() -> bool:
            holding.set()
            return release.wait(30)

        held = writer.call(hold)
        # Only once the writer runs the job: before that it may take the events with it.
        assert holding.wait(15)
        with HeraldClient(herald.grpc_address) as client:
            waiting = threading.Thread(target=client.emit, args=([event(), event()],))
            waiting.start()
            try:
                s = scrape_until(
                    herald,
                    lambda found: value(found, "herald_ingest_queue_events") == 2,
                    "two events queued",
                )
                assert value(s, "herald_ingest_queue_bytes") > 2 * 100
                with pytest.raises(Busy):
                    client.emit([event(), event()])
            finally:
                release.set()
                waiting.join(10)
        held.result(10)
        s = scrape(herald)
        assert value(s, "herald_busy_answers_total", reason="ingest_queue") == 1
        assert value(s, "herald_items_rejected_total", signal="events", reason="busy") == 2
        assert value(s, "herald_items_stored_total", signal="events") == 2
        assert value(s, "herald_ingest_queue_events") == 0
        assert value(s, "herald_ingest_queue_bytes") == 0


def test_tail_subscribers_and_sql_outcomes(tmp_path: Path) -> None:
    config = test_config(tmp_path / "t.duckdb", query={"max_tail_subscribers": 1})
    with running_herald(config) as herald, grpc.insecure_channel(herald.grpc_address) as channel:
        stub = herald_pb2_grpc.HeraldStub(channel)
        tail = stub.Tail(herald_pb2.TailRequest(backfill=False))
        tail.initial_metadata()  # sent once the subscription exists
        assert value(scrape(herald), "herald_tail_subscribers") == 1
        second = stub.Tail(herald_pb2.TailRequest(backfill=False))
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(second))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        tail.cancel()
        wait_for(lambda: value(scrape(herald), "herald_tail_subscribers") == 0, what="unsubscribed")

        assert stub.Sql(herald_pb2.SqlRequest(sql="SELECT 42 AS answer"), timeout=30).arrow_ipc
        with pytest.raises(grpc.RpcError) as invalid:
            stub.Sql(herald_pb2.SqlRequest(sql="DELETE FROM events"), timeout=30)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with HeraldClient(herald.grpc_address) as client:
            with client.sql_stream("SELECT * FROM range(10)", all_rows=True) as stream:
                assert stream.read_all().num_rows == 10
            with pytest.raises(InvalidInput):
                client.sql("SELECT * FROM no_such_table")
        s = scrape(herald)
        assert value(s, "herald_busy_answers_total", reason="tail") == 1
        assert value(s, "herald_sql_queries_total", kind="unary", outcome="ok") == 1
        assert value(s, "herald_sql_queries_total", kind="unary", outcome="invalid") == 1
        assert value(s, "herald_sql_queries_total", kind="stream", outcome="ok") == 1
        assert value(s, "herald_sql_queries_total", kind="stream", outcome="invalid") == 1


def test_automation_firings_actions_and_webhook_latency(tmp_path: Path) -> None:
    with (
        webhook_receiver() as hook,
        running_herald(test_config(tmp_path / "a.duckdb")) as herald,
        AutomationsClient(herald.grpc_address) as automations,
    ):
        automations.create(
            {
                "name": "hook",
                "trigger": {"expect": ["test.thing.happened"], "posture": "Reactive"},
                "actions": [{"type": "call-webhook", "url": f"{hook.url}/fired"}],
            }
        )
        assert post_events(herald, [event()]).status_code == 204
        wait_for(lambda: hook.paths == ["/fired"], what="the webhook call")
        s = scrape_until(
            herald,
            lambda found: (
                value(
                    found, "herald_automation_actions_total", type="call-webhook", status="executed"
                )
                == 1
            ),
            "the action's outcome",
        )
        assert value(s, "herald_automation_firings_total") == 1
        assert value(s, "herald_webhook_request_seconds_count", outcome="2xx") == 1
        assert 0 < value(s, "herald_webhook_request_seconds_sum", outcome="2xx") < 10


def test_retention_runs_and_checkpoints_are_counted(tmp_path: Path) -> None:
    config = test_config(
        tmp_path / "r.duckdb",
        storage={"retention_days": 1, "retention_interval_seconds": 0.2},
    )
    with running_herald(config) as herald:
        old = datetime.now(UTC) - timedelta(days=10)
        assert post_events(herald, [event(occurred=old) for _ in range(5)]).status_code == 204
        # Deleted by a later pass; the space comes back at the idle checkpoint after it.
        s = scrape_until(
            herald,
            lambda found: (
                value(found, "herald_retention_deleted_events_total") == 5
                and value(found, "herald_checkpoints_total", outcome="done") >= 1
            ),
            "retention and its checkpoint",
        )
        assert value(s, "herald_retention_runs_total", outcome="done") >= 2
        assert value(s, "herald_retention_runs_total", outcome="failed") == 0


def test_readiness_is_503_with_the_reason_once_the_writer_stops(tmp_path: Path) -> None:
    with running_herald(test_config(tmp_path / "w.duckdb")) as herald:
        base = f"http://{herald.http_address}"
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, what="ready")
        writer = herald.writer
        assert writer is not None
        writer.stop()  # what a writer thread that died looks like from outside
        reply = httpx.get(f"{base}/readyz", timeout=10)
        assert reply.status_code == 503
        body = reply.json()
        assert body["status"] == "not ready"
        assert body["checks"]["writer"] == "the writer thread is not running"
        assert body["reason"] == "writer: the writer thread is not running"
        assert body["version"] == herald_version()
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # alive all the same

        runner = CliRunner()
        result = runner.invoke(cli_app, ["status", "--http", herald.http_address])
        assert result.exit_code == 4, result.output
        assert "NOT READY (writer: the writer thread is not running)" in result.output


def test_readiness_without_automations_does_not_wait_for_an_evaluator(tmp_path: Path) -> None:
    config = test_config(tmp_path / "n.duckdb", automations={"enabled": False})
    with running_herald(config) as herald:
        reply = httpx.get(f"http://{herald.http_address}/readyz", timeout=10)
        assert reply.status_code == 200
        assert reply.json()["checks"]["evaluator"] == "ok"


def test_two_servers_in_one_process_keep_their_own_numbers(tmp_path: Path) -> None:
    with (
        running_herald(test_config(tmp_path / "one.duckdb")) as one,
        running_herald(test_config(tmp_path / "two.duckdb")) as two,
    ):
        assert post_events(one, [event(), event()]).status_code == 204
        assert value(scrape(one), "herald_items_stored_total", signal="events") == 2
        assert value(scrape(two), "herald_items_stored_total", signal="events") == 0


def test_herald_status_summarizes_the_metrics(secured: Herald) -> None:
    assert post_events(secured, [event(), event(), {"bad": 1}], INGEST_TOKEN).status_code == 422
    runner = CliRunner()
    args = ["--token", READ_TOKEN, "status", "--http", secured.http_address]
    wait_for(lambda: runner.invoke(cli_app, args).exit_code == 0, what="ready")
    text = runner.invoke(cli_app, args)
    assert text.exit_code == 0, text.output
    first, *rest = text.output.splitlines()
    assert first.startswith(f"herald {herald_version()} at http://{secured.http_address}: ready")
    events_line = next(line for line in rest if line.strip().startswith("events"))
    assert events_line.split()[:4] == ["events", "3", "2", "1"]
    assert "(invalid 1)" in events_line

    as_json = runner.invoke(cli_app, [*args, "--format", "json"])
    summary = json.loads(as_json.output)
    assert summary["ready"] is True
    assert summary["ingest"]["events"] == {"received": 3, "stored": 2, "rejected": {"invalid": 1}}
    assert summary["group_commits"]["events"]["count"] == 1

    denied = runner.invoke(cli_app, ["status", "--http", secured.http_address])
    assert denied.exit_code == 5
    assert "not authenticated" in denied.output


def test_herald_status_without_a_server_says_so(tmp_path: Path) -> None:
    with running_herald(test_config(tmp_path / "gone.duckdb")) as herald:
        address = herald.http_address
    result = CliRunner().invoke(cli_app, ["status", "--http", address])
    assert result.exit_code == 3
    assert f"no Herald server answers HTTP at http://{address}" in result.output


def test_version_flag_prints_the_installed_version() -> None:
    result = CliRunner().invoke(cli_app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"herald {herald_version()}\n"
