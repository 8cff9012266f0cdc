"""Traces end to end: a real OTel SDK export (OTLP/gRPC) to a real ``herald serve`` on port 0,
then the trace read back — by the related-resource filter (``--related trace=<hex>``), by the
reader interface's trace query (online and offline), by ``herald trace`` and by the
``/traces/{trace_id}`` page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from collector.app import Herald
from collector.client.local import LocalReader
from collector.client.remote import HeraldClient
from collector.errors import InvalidInput, NotFound, Unauthenticated
from collector.testing import ServedProcess, ports_zero, serve_process
from tests.conftest import READ_TOKEN
from tests.otel_trace_sample import HOSTILE, SampleTrace, export_sample_trace

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


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleTrace]:
    """A store file holding the sample trace, its server stopped (the CLI's ``--db``)."""
    db = tmp_path_factory.mktemp("traces-offline") / "herald.duckdb"
    with serve_process(*ports_zero(db)) as server:
        sample = export_sample_trace(server.grpc)
        server.sigterm()
    return db, sample


def check_trace(trace: dict[str, Any], sample: SampleTrace) -> None:
    """The sample trace as the trace query must give it back."""
    assert trace["trace_id"] == sample.trace_id
    assert trace["span_count"] == 5
    assert trace["error_count"] == 1
    assert trace["event_count"] == sample.event_count
    assert trace["truncated"] is False
    assert trace["services"] == ["payments", "shop-api"]
    assert trace["duration_ms"] == pytest.approx(100.0)
    spans = trace["spans"]
    # Tree order: parents first, siblings by start time, with their depth.
    assert [(s["name"], s["depth"]) for s in spans] == [
        ("POST /checkout", 0),
        ("reserve stock", 1),
        ("SELECT stock", 2),
        ("charge card", 1),
        ("authorize", 2),
    ]
    by_name = {s["name"]: s for s in spans}
    ids = sample.spans
    for name, parent in [
        ("POST /checkout", None),
        ("reserve stock", "POST /checkout"),
        ("SELECT stock", "reserve stock"),
        ("charge card", "POST /checkout"),
        ("authorize", "charge card"),  # across services, through the OTel context
    ]:
        span = by_name[name]
        assert span["span_id"] == ids[name]
        assert span["parent_span_id"] == (ids[parent] if parent else None)
        assert span["parent_missing"] is False
    assert by_name["authorize"]["service"] == "payments"
    assert by_name["charge card"]["service"] == "shop-api"
    assert by_name["charge card"]["kind"] == "client"
    assert by_name["charge card"]["status"] == {"code": "error", "message": "card declined"}
    assert by_name["authorize"]["status"]["code"] == "ok"
    assert by_name["reserve stock"]["status"]["code"] == "unset"
    assert by_name["SELECT stock"]["attributes"] == {"db.statement": HOSTILE}
    for name, start, took in [
        ("POST /checkout", 0, 100),
        ("reserve stock", 2, 18),
        ("SELECT stock", 3, 12),
        ("charge card", 21, 59),
        ("authorize", 25, 45),
    ]:
        assert by_name[name]["offset_ms"] == pytest.approx(start), name
        assert by_name[name]["duration_ms"] == pytest.approx(took), name
    charge_events = by_name["charge card"]["events"]
    assert [e["name"] for e in charge_events] == ["retry", "exception"]
    assert charge_events[0]["attributes"] == {"attempt": 2}
    assert charge_events[0]["offset_ms"] == pytest.approx(72)
    assert charge_events[1]["attributes"]["exception.type"] == "ValueError"
    assert charge_events[1]["attributes"]["exception.message"] == "card declined"
    assert all(not s["events"] for s in spans if s["name"] != "charge card")
    logs = trace["logs"]
    assert [(log["body"], log["span_id"], log["severity_text"]) for log in logs] == [
        ("checkout started", ids["POST /checkout"], "INFO"),
        ("payment declined", ids["charge card"], "ERROR"),
    ]
    assert logs[1]["attributes"] == {"order.id": 8812}
    assert logs[1]["offset_ms"] == pytest.approx(76)
    assert trace["other_events"] == []


def test_trace_query_online(served: tuple[ServedProcess, SampleTrace]) -> None:
    server, sample = served
    with HeraldClient(server.grpc) as client:
        check_trace(dict(client.trace(sample.trace_id)), sample)
        # The stored resource id and upper-case hex name the same trace.
        assert client.trace(f"otel.trace.{sample.trace_id.upper()}") == client.trace(
            sample.trace_id
        )
        other = client.trace(sample.other_trace_id)
        assert [s["name"] for s in other["spans"]] == ["GET /health"]
        with pytest.raises(NotFound, match="no events of trace"):
            client.trace("0123456789abcdef0123456789abcdef")
        with pytest.raises(InvalidInput, match="32 hexadecimal digits"):
            client.trace("not-a-trace")


def test_trace_query_offline(offline: tuple[Path, SampleTrace]) -> None:
    db, sample = offline
    with LocalReader(str(db)) as reader:
        check_trace(dict(reader.trace(sample.trace_id)), sample)
        with pytest.raises(NotFound):
            reader.trace("0123456789abcdef0123456789abcdef")
        with pytest.raises(InvalidInput, match="32 hexadecimal digits"):
            reader.trace("abc")


def test_trace_command_prints_the_span_tree(served: tuple[ServedProcess, SampleTrace]) -> None:
    server, sample = served
    result = runner.invoke(
        app,
        ["--address", server.grpc, "trace", sample.trace_id, "-f", "table"],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"trace {sample.trace_id} · 5 spans · 2 services · 100 ms · 1 error" in out
    lines = out.splitlines()

    def row(text: str) -> str:
        [line] = [line for line in lines if text in line]
        return line

    # The tree: guides show who is whose child; each span with service, duration, status.
    assert "POST /checkout" in row("POST /checkout") and "100 ms" in row("POST /checkout")
    assert "├─ reserve stock" in row("reserve stock")
    assert "│  └─ SELECT stock" in row("SELECT stock")
    charge = row("└─ charge card")
    assert "shop-api" in charge and "59.0 ms" in charge and "error card declined" in charge
    authorize = row("└─ authorize")
    assert "payments" in authorize and "45.0 ms" in authorize and " ok " in authorize
    # Span events and logs beneath their span, in time order, before its child's row.
    order = [i for i, line in enumerate(lines) for key in ("• retry", "• exception") if key in line]
    assert len(order) == 2 and lines.index(charge) < order[0] < order[1] < lines.index(authorize)
    assert "▸ ERROR: payment declined" in out and "▸ INFO: checkout started" in out
    # The waterfall: the root's bar is the longest.
    bars = {name: row(name).count("█") for name in ("POST /checkout", "└─ charge card")}
    assert bars["POST /checkout"] > bars["└─ charge card"] > 0


def test_trace_command_json_online_and_offline(
    served: tuple[ServedProcess, SampleTrace], offline: tuple[Path, SampleTrace]
) -> None:
    server, sample = served
    online = cli(server, "trace", sample.trace_id)
    check_trace(online, sample)
    with HeraldClient(server.grpc) as client:
        assert online == client.trace(sample.trace_id)
    db, stored = offline
    result = runner.invoke(app, ["trace", stored.trace_id, "--db", str(db), "-f", "json"])
    assert result.exit_code == 0, result.output
    check_trace(json.loads(result.stdout), stored)
    table = runner.invoke(app, ["trace", stored.trace_id, "--db", str(db), "-f", "table"])
    assert table.exit_code == 0, table.output
    assert "└─ authorize" in table.stdout
    rows = runner.invoke(app, ["trace", stored.trace_id, "--db", str(db), "-f", "csv"])
    assert rows.exit_code == 0, rows.output
    header, *spans = rows.stdout.strip().splitlines()
    assert header.startswith("span_id,parent_span_id,depth,service,name")
    assert [line.split(",")[4] for line in spans] == [s["name"] for s in online["spans"]]


@pytest.mark.parametrize(
    "bad", ["4bf92f35", "4bf92f3577b34da6a3ce929d0e0e47361", "zz" * 16, "0" * 32, "--"]
)
def test_trace_command_refuses_a_malformed_id(bad: str) -> None:
    # No server at all: the id is checked before any connection is made.
    result = runner.invoke(app, ["--address", "127.0.0.1:9", "trace", "--", bad])
    assert result.exit_code == 1
    assert "herald: error: trace id must" in result.stderr
    assert "Traceback" not in result.output


def test_trace_command_unknown_trace(served: tuple[ServedProcess, SampleTrace]) -> None:
    server, _ = served
    result = runner.invoke(app, ["--address", server.grpc, "trace", "ab" * 16])
    assert result.exit_code == 1
    assert f"no events of trace {'ab' * 16} are stored" in result.stderr


def test_trace_json_over_http(served: tuple[ServedProcess, SampleTrace]) -> None:
    server, sample = served
    base = f"http://{server.http}"
    with httpx.Client(base_url=base, timeout=10) as http:
        reply = http.get(f"/api/traces/{sample.trace_id}")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/json")
        check_trace(reply.json(), sample)
        missing = http.get(f"/api/traces/{'ab' * 16}")
        assert missing.status_code == 404
        assert "no events of trace" in missing.json()["detail"]
        bad = http.get("/api/traces/xyz")
        assert bad.status_code == 400
        assert "32 hexadecimal digits" in bad.json()["detail"]


SPAN_ROW = re.compile(
    r'<tr class="span status-row-(\w+)" id="span-([0-9a-f]{16})" data-span-id="\2" '
    r'data-parent-id="([0-9a-f]*)" data-depth="(\d+)">'
)


def test_trace_page_shows_the_waterfall(served: tuple[ServedProcess, SampleTrace]) -> None:
    server, sample = served
    with httpx.Client(base_url=f"http://{server.http}", timeout=10) as http:
        page = http.get(f"/traces/{sample.trace_id}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        html = page.text
        ids = sample.spans
        # Every span, in tree order, with its parent link, depth and status.
        rows = [(m[2], m[3], int(m[4]), m[1]) for m in SPAN_ROW.finditer(html)]
        assert rows == [
            (ids["POST /checkout"], "", 0, "ok"),
            (ids["reserve stock"], ids["POST /checkout"], 1, "unset"),
            (ids["SELECT stock"], ids["reserve stock"], 2, "unset"),
            (ids["charge card"], ids["POST /checkout"], 1, "error"),
            (ids["authorize"], ids["charge card"], 2, "ok"),
        ]
        for text in [
            *ids,  # span names
            ">shop-api</a>",
            ">payments</a>",
            "59.0 ms",
            "45.0 ms",
            "card declined",
            "retry",
            "exception",
            "payment declined",
            "checkout started",
        ]:
            assert text in html, text
        # Span events and logs sit beneath their span (before the next span's row).
        charge_at = html.index(f'id="span-{ids["charge card"]}"')
        authorize_at = html.index(f'id="span-{ids["authorize"]}"')
        assert charge_at < html.index("payment declined") < authorize_at
        assert charge_at < html.index(">exception<") < authorize_at
        # Each item links to its stored event.
        assert html.count('href="/events/') >= sample.event_count
        # A span attribute holding markup is shown as text.
        assert "<script>alert" not in html and "&lt;script&gt;alert(" in html
        missing = http.get(f"/traces/{'ab' * 16}")
        assert missing.status_code == 404 and "no events of trace" in missing.text
        bad = http.get("/traces/not-hex")
        assert bad.status_code == 400 and "32 hexadecimal digits" in bad.text


def test_trace_reads_need_the_read_scope(secured_herald: Herald) -> None:
    trace_id = "ab" * 16
    base = f"http://{secured_herald.http_address}"
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get(f"/api/traces/{trace_id}").status_code == 401
        bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert http.get(f"/api/traces/{trace_id}", headers=bearer).status_code == 404
        page = http.get(f"/traces/{trace_id}", follow_redirects=False)
        assert page.status_code in (303, 401)  # the UI asks for a token first
    with HeraldClient(secured_herald.grpc_address) as client, pytest.raises(Unauthenticated):
        client.trace(trace_id)
    with HeraldClient(secured_herald.grpc_address, token=READ_TOKEN) as client:
        with pytest.raises(NotFound):
            client.trace(trace_id)
