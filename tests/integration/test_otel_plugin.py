"""The OpenTelemetry exporter plugin with the real SDK: ``opentelemetry-instrument`` runs a small
app (examples/otel_plugin_app.py) with ``OTEL_TRACES_EXPORTER=herald`` and
``OTEL_LOGS_EXPORTER=herald``, in embedded mode (``HERALD_DB``: the events are in the file when
the app has exited) and remote mode (a real ``herald serve``), plus ``register`` in-process and
the remote client's retries on a busy server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.client.otlp import OtlpClient
from collector.client.remote import HeraldClient
from collector.domain.columns import EventColumns
from collector.errors import StoreError
from collector.otel import HeraldLogExporter, HeraldSpanExporter, register
from collector.testing import ports_zero, running_herald, serve_process, test_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "otel_plugin_app.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
TOKEN = "otel-plugin-token"


def run_instrumented(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The example app under ``opentelemetry-instrument`` with the ``herald`` exporters and
    ``env`` (HERALD_* and OTEL_* of this process left out)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "OTEL_"))}
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(APP)],
        cwd=cwd,
        env={
            **base,
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_TRACES_EXPORTER": "herald",
            "OTEL_LOGS_EXPORTER": "herald",
            "OTEL_METRICS_EXPORTER": "none",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def check_app_events(events: list[tuple[str, str, Any, Any]], trace_id: str) -> None:
    """What the example app's one trace must have become: (event, resource_id, related,
    payload) rows, related/payload as JSON text or parsed."""
    parsed = [
        (name, rid, orjson.loads(rel) if isinstance(rel, str) else rel, pay)
        for name, rid, rel, pay in events
    ]
    assert {rid for _, rid, _, _ in parsed} == {"otel.service.shop"}
    spans = {}
    for name, _, related, _payload in parsed:
        if name.startswith("otel.span."):
            span = related[0]
            spans[span["prefect.resource.name"]] = (name, span, related)
    assert set(spans) == {"checkout", "charge", "refund"}
    assert spans["refund"][0] == "otel.span.error"
    assert spans["checkout"][0] == spans["charge"][0] == "otel.span.unset"
    assert spans["checkout"][1]["order.id"] == "o-42"
    checkout_id = spans["checkout"][1]["prefect.resource.id"]
    parents = {
        name: [r["prefect.resource.id"] for r in rel if r["prefect.resource.role"] == "parent-span"]
        for name, (_, _, rel) in spans.items()
    }
    assert parents == {"checkout": [], "charge": [checkout_id], "refund": [checkout_id]}
    for _, span, related in spans.values():
        assert span["otel.trace_id"] == trace_id
        assert {
            "prefect.resource.id": f"otel.trace.{trace_id}",
            "prefect.resource.role": "trace",
        } in related
    names = [name for name, _, _, _ in parsed]
    assert names.count("exception") == 1  # the refund span's exception event
    logs = {name: (rel, pay) for name, _, rel, pay in parsed if name.startswith("otel.log.")}
    assert set(logs) == {"otel.log.warn", "otel.log.error"}
    warn_related, warn_payload = logs["otel.log.warn"]
    warn_payload = orjson.loads(warn_payload) if isinstance(warn_payload, str) else warn_payload
    assert warn_payload["body"] == "card declined for order o-42"
    # logged inside the charge span: related to it and to its trace
    charge_id = spans["charge"][1]["prefect.resource.id"]
    assert [
        r["prefect.resource.id"] for r in warn_related if r["prefect.resource.role"] == "span"
    ] == [charge_id]


def test_instrumented_app_in_embedded_mode_writes_the_store_file(tmp_path: Path) -> None:
    db = tmp_path / "app.duckdb"
    done = run_instrumented({"HERALD_DB": str(db)}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    trace_id = done.stdout.strip()
    events = rows(db, "SELECT event, resource_id, related::VARCHAR, payload::VARCHAR FROM events")
    check_app_events(events, trace_id)

    # A second run appends to the same file (the first one released it at exit).
    again = run_instrumented({"HERALD_DB": str(db)}, tmp_path)
    assert again.returncode == 0, again.stderr
    traces = rows(
        db,
        "SELECT DISTINCT related->0->>'otel.trace_id' FROM events WHERE event LIKE 'otel.span.%'",
    )
    assert {t for (t,) in traces} == {trace_id, again.stdout.strip()}


@pytest.mark.e2e  # runs herald serve as a subprocess
def test_instrumented_app_in_remote_mode_sends_to_the_server(tmp_path: Path) -> None:
    db = tmp_path / "served.duckdb"
    tokens = orjson.dumps([{"token": TOKEN, "scopes": ["ingest", "read"]}]).decode()
    with serve_process(*ports_zero(db), env={"HERALD_AUTH__TOKENS": tokens}) as served:
        done = run_instrumented({"HERALD_ADDRESS": served.grpc, "HERALD_TOKEN": TOKEN}, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "could not export" not in done.stderr, done.stderr
        trace_id = done.stdout.strip()
        # Exported at the app's exit, and an export returns once committed: no waiting here.
        with HeraldClient(served.grpc, TOKEN) as client:
            page = client.query({"resource": {"id": ["otel.service.shop"]}}, limit=50)
        events = [
            (ev["event"], ev["resource"]["prefect.resource.id"], ev["related"], ev["payload"])
            for ev in page["events"]
        ]
        check_app_events(events, trace_id)

        # Without the token the server refuses, and the app says why (and still runs).
        refused = run_instrumented({"HERALD_ADDRESS": served.grpc}, tmp_path)
        assert refused.returncode == 0, refused.stderr
        assert "could not export" in refused.stderr and "Unauthenticated" in refused.stderr
        with HeraldClient(served.grpc, TOKEN) as client:
            assert client.query({"resource": {"id": ["otel.service.shop"]}}, limit=50)[
                "total"
            ] == len(events)


@pytest.mark.e2e  # runs herald serve as a subprocess
def test_embedded_mode_on_a_file_a_server_holds_says_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    with serve_process(*ports_zero(db)) as served:
        done = run_instrumented({"HERALD_DB": str(db)}, tmp_path)
        with pytest.raises(StoreError, match=r"HERALD_DB=.*in use by another process"):
            HeraldSpanExporter(db=str(db))
    assert done.returncode == 0, done.stderr  # the app itself still runs
    assert done.stdout.strip()
    assert f"in use by another process (PID {served.proc.pid})" in done.stderr, done.stderr
    assert "HERALD_ADDRESS" in done.stderr


def test_herald_db_and_address_together_are_refused(tmp_path: Path) -> None:
    done = run_instrumented(
        {"HERALD_DB": str(tmp_path / "x.duckdb"), "HERALD_ADDRESS": "127.0.0.1:4317"}, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "HERALD_DB" in done.stderr and "unset one" in done.stderr, done.stderr
    assert not (tmp_path / "x.duckdb").exists()


# --- register() and the exporters in this process ------------------------------------------


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("test.otel.plugin")
    log.setLevel(logging.INFO)
    yield log
    log.setLevel(logging.NOTSET)


def test_register_embedded_shares_the_file_until_both_providers_shut_down(tmp_path: Path) -> None:
    from opentelemetry.sdk._logs import LoggerProvider

    from collector.otel import register_logs

    db = tmp_path / "registered.duckdb"
    provider = register("billing", db=str(db), set_global=False)
    logs: LoggerProvider = register_logs("billing", db=str(db), set_global=False)
    tracer = provider.get_tracer("billing")
    with tracer.start_as_current_span("invoice") as span:
        logs.get_logger("billing").emit(
            body="invoice sent", severity_number=SeverityNumber.INFO, severity_text="INFO"
        )
        trace_id = f"{span.get_span_context().trace_id:032x}"
    provider.shutdown()
    # The logs provider still holds the file: DuckDB lets no other connection open it, and
    # the CLI says who holds it.
    with pytest.raises(duckdb.Error):
        rows(db, "SELECT 1")
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "events", "ls", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0
    assert f"in use by another process (PID {os.getpid()})" in cli.stderr, cli.stderr
    assert "embedded mode" in cli.stderr
    logs.shutdown()
    stored = rows(db, "SELECT event, resource_id, related::VARCHAR FROM events ORDER BY event")
    assert [(name, rid) for name, rid, _ in stored] == [
        ("otel.log.info", "otel.service.billing"),
        ("otel.span.unset", "otel.service.billing"),
    ]
    for _, _, related in stored:  # the record was logged inside the span
        assert f"otel.trace.{trace_id}" in {r["prefect.resource.id"] for r in orjson.loads(related)}


REGISTER_APP = """
import logging, sys
from collector.otel import register

provider = register("billing", db=sys.argv[1], logs=True)  # global providers, root handler
logging.getLogger("billing").warning("invoice %s overdue", "i-7")
with provider.get_tracer("billing").start_as_current_span("remind"):
    logging.getLogger("billing").error("reminder bounced")
"""


def test_register_with_logs_in_an_app_sends_spans_and_logging_records(tmp_path: Path) -> None:
    db = tmp_path / "app.duckdb"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", REGISTER_APP, str(db)],
        cwd=tmp_path,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stored = rows(db, "SELECT event, payload->>'body' FROM events ORDER BY occurred")
    assert stored == [
        ("otel.log.warn", "invoice i-7 overdue"),
        ("otel.log.error", "reminder bounced"),
        ("otel.span.unset", None),
    ]


def test_register_remote_exports_are_committed_when_they_return(tmp_path: Path) -> None:
    with running_herald(test_config(tmp_path / "r.duckdb")) as herald:
        provider = register("billing", address=herald.grpc_address, batch=False, set_global=False)
        try:
            with provider.get_tracer("billing").start_as_current_span("invoice"):
                pass
            # SimpleSpanProcessor exported as the span ended; the reply came after the commit.
            assert herald.store is not None and herald.store.count_events() == 1
        finally:
            provider.shutdown()


def test_exporter_reports_an_unreachable_server_and_fails_the_export(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans = finished_spans(1)
    exporter = HeraldSpanExporter(address="127.0.0.1:1", timeout=0.5)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="collector.otel"):
            assert exporter.export(spans).name == "FAILURE"
            assert exporter.export(spans).name == "FAILURE"
        assert time.monotonic() - started < 10
    finally:
        exporter.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("collector.otel")]
    assert len(warnings) == 1, warnings  # the same failure is reported once
    assert "no Herald server at 127.0.0.1:1" in warnings[0]
    assert exporter.export(spans).name == "FAILURE"  # shut down


def test_log_exporter_without_records_sends_nothing(tmp_path: Path) -> None:
    exporter = HeraldLogExporter(db=str(tmp_path / "empty.duckdb"))
    assert exporter.export([]).name == "SUCCESS"
    exporter.shutdown()
    assert rows(tmp_path / "empty.duckdb", "SELECT count(*) FROM events") == [(0,)]


def finished_spans(n: int) -> list[ReadableSpan]:
    """``n`` real finished SDK spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(n):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def one_event() -> EventColumns:
    cols = EventColumns()
    cols.append_json(
        "0190b6a0-0000-7000-8000-000000000001",
        int(time.time() * 1e6),
        "filler",
        "r",
        '{"prefect.resource.id":"r"}',
        "[]",
        "{}",
    )
    return cols


def test_otlp_client_retries_a_busy_server_until_committed(tmp_path: Path) -> None:
    config = test_config(
        tmp_path / "busy.duckdb", storage={"queue_max_events": 1, "batch_max_events": 1}
    )
    request = encode_spans(finished_spans(2))
    with running_herald(config) as herald:
        assert herald.writer is not None and herald.store is not None
        client = OtlpClient(herald.grpc_address, timeout=30)
        result: list[Any] = []
        with herald.store._write_lock:  # the writer blocks in its commit; the queue is full
            pending = herald.writer.submit_nowait(one_event())
            sender = threading.Thread(target=lambda: result.append(client.export_traces(request)))
            sender.start()
            wait_for(lambda: client.retries >= 1, what="a busy answer retried")
            assert not result
        sender.join(timeout=30)
        pending.result(timeout=30)
        client.close()
        assert len(result) == 1 and not result[0].HasField("partial_success")
        assert herald.store.count_events() == 3


def test_spans_herald_refuses_are_reported_and_the_rest_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("fine"):
        pass
    year_2200_ns = 7_258_118_400 * 10**9
    tracer.start_span("from the future", start_time=year_2200_ns).end(end_time=year_2200_ns + 1)
    provider.shutdown()
    db = tmp_path / "partial.duckdb"
    exporter = HeraldSpanExporter(db=str(db))
    with caplog.at_level(logging.WARNING, logger="collector.otel"):
        assert exporter.export(memory.get_finished_spans()).name == "SUCCESS"
    exporter.shutdown()
    [warning] = [r.getMessage() for r in caplog.records if r.name.startswith("collector.otel")]
    assert "did not store some spans" in warning and "from the future" in warning
    assert rows(db, "SELECT related->0->>'prefect.resource.name' FROM events") == [("fine",)]
