"""Traces end to end: a real OTel SDK export (OTLP/gRPC) to a real ``herald serve`` on port 0,
then the trace read back — by the related-resource filter (``--related trace=<hex>``), by the
reader interface's trace query (online and offline), by ``herald trace`` and by the
``/traces/{trace_id}`` page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.client.remote import HeraldClient
from collector.testing import ServedProcess, ports_zero, serve_process
from tests.otel_trace_sample import SampleTrace, export_sample_trace

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedProcess, SampleTrace]]:
    """One ``herald serve`` child holding the sample trace (exported once for the module)."""
    db = tmp_path_factory.mktemp("traces") / "herald.duckdb"
    with serve_process(*ports_zero(db)) as server:
        yield server, export_sample_trace(server.grpc)


def cli(server: ServedProcess, *args: str) -> Any:
    """``herald <args> -f json`` against the server; the parsed JSON it printed."""
    result = runner.invoke(
        app, ["--address", server.grpc, *args, "-f", "json"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_related_trace_hex_finds_the_traces_events(
    served: tuple[ServedProcess, SampleTrace],
) -> None:
    server, sample = served
    events = cli(server, "events", "ls", "--related", f"trace={sample.trace_id}")
    assert len(events) == sample.event_count
    names = sorted(e["event"] for e in events)
    assert names == sorted(
        ["otel.span.ok"] * 2
        + ["otel.span.unset"] * 2
        + ["otel.span.error", "retry", "exception", "otel.log.info", "otel.log.error"]
    )
    # Upper-case hex (as some tools print it) and the stored id itself find the same events.
    upper = cli(server, "events", "ls", "--related", f"trace={sample.trace_id.upper()}")
    full = cli(server, "events", "ls", "--related", f"trace=otel.trace.{sample.trace_id}")
    assert {e["id"] for e in upper} == {e["id"] for e in full} == {e["id"] for e in events}
    # The same filter as JSON, through the client: what the HTTP feed and the web page send.
    with HeraldClient(server.grpc) as client:
        page = client.query({"related": {"role": ["trace"], "id": [sample.trace_id]}}, 50)
    assert page["total"] == sample.event_count
    # A span's events by the span's hex id.
    charge = sample.spans["charge card"]
    of_span = cli(server, "events", "ls", "--related", f"span={charge}")
    assert sorted(e["event"] for e in of_span) == [
        "exception",
        "otel.log.error",
        "otel.span.error",
        "retry",
    ]
