"""HTTP request bodies are read whole, however they arrive, up to ``max_receive_bytes``.

Real clients at real sizes: the OTel SDK's OTLP/HTTP exporter with its default 512-span batch
of spans carrying ~2 KB of attributes, OTLP/JSON bodies of the same size, raw sockets that
write one body in many pieces with pauses, ``Transfer-Encoding: chunked``, and bodies of
1 MB, 10 MB and 60 MB. Every acknowledged item must be in the store; a refused body stores
nothing. Limits are tested at, just under and just over, plain and gzip.
"""

from __future__ import annotations

import base64
import gzip
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.app import Herald
from collector.domain.ids import derived_uuid, uuid7_str
from collector.testing import running_herald, test_config

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_LIMIT = 64 * 1024 * 1024  # ServerConfig.max_receive_bytes


# --- helpers -------------------------------------------------------------------------------


def stored_ids(herald: Herald) -> set[str]:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        return {row[0] for row in cur.execute("SELECT id::VARCHAR FROM events").fetchall()}
    finally:
        cur.close()


def stored(herald: Herald) -> int:
    assert herald.store is not None
    return herald.store.count_events()


def sdk_spans(count: int, attribute_bytes: int = 2048) -> Sequence[ReadableSpan]:
    """``count`` finished SDK spans, each with ~``attribute_bytes`` of attributes (a SQL
    statement and a header, as real instrumentations record)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bodies"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("robustness.bodies")
    statement = ("SELECT o.id, o.total FROM orders o WHERE o.customer = ? " * 40)[
        : attribute_bytes * 3 // 4
    ]
    cookie = ("session=" + "ab12" * attribute_bytes)[: attribute_bytes // 4]
    for i in range(count):
        span = tracer.start_span(f"query-{i}")
        span.set_attribute("db.statement", statement)
        span.set_attribute("http.request.header.cookie", cookie)
        span.set_attribute("row", i)
        span.end()
    provider.shutdown()
    return memory.get_finished_spans()


def span_ids(spans: Iterable[ReadableSpan]) -> set[str]:
    """The ids Herald stores the spans under (the OTLP mapping's derived ids)."""
    ids = set()
    for span in spans:
        ctx = span.get_span_context()
        assert ctx is not None
        ids.add(
            derived_uuid(b"span", ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big"))
        )
    return ids


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of ``request``: proto3 JSON, but with hex trace and span ids (OTLP's rule;
    ``json_format`` writes bytes as base64)."""
    data = json_format.MessageToDict(request)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(data)


def resource_spans_request(resources: int, attribute_bytes: int = 900) -> ExportTraceServiceRequest:
    """One resource (with one span of ~``attribute_bytes``) per index: the shape that lost
    619 of 1,000 spans."""
    request = ExportTraceServiceRequest()
    for i in range(resources):
        rs = request.resource_spans.add()
        rs.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=f"svc-{i}"))
        )
        span = rs.scope_spans.add().spans.add()
        span.trace_id = (0x5B8E << 112 | i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"op-{i}"
        span.start_time_unix_nano = 1_764_000_000_000_000_000 + i
        span.end_time_unix_nano = 1_764_000_000_500_000_000 + i
        span.attributes.append(
            KeyValue(key="blob", value=AnyValue(string_value=f"{i:06d}" * (attribute_bytes // 6)))
        )
    return request


def request_span_ids(request: ExportTraceServiceRequest) -> set[str]:
    return {
        derived_uuid(b"span", span.trace_id, span.span_id)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


def native_events(count: int, payload_bytes: int) -> list[dict[str, Any]]:
    """Prefect-shaped events whose JSON is ~``payload_bytes`` + 200 bytes each."""
    return [
        {
            "id": uuid7_str(),
            "event": "app.order.shipped",
            "resource": {"prefect.resource.id": f"app.order.{i}", "region": "eu"},
            "related": [
                {"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}
            ],
            "payload": {"note": f"{i:08d}" * (payload_bytes // 8)},
        }
        for i in range(count)
    ]


def padded(events: list[dict[str, Any]], size: int) -> bytes:
    """The events as a JSON body of exactly ``size`` bytes (trailing whitespace is valid JSON)."""
    body = orjson.dumps(events)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def raw_http(
    address: str,
    method: str,
    path: str,
    headers: dict[str, str],
    pieces: Iterable[bytes],
    pause: float = 0.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request over a plain socket: the head, then each piece in its own ``sendall`` with
    ``pause`` seconds before it, so the server sees the body arrive over many reads.
    Returns (status, headers, body) of the answer (``Connection: close``: read to EOF)."""
    host, port = address.rsplit(":", 1)
    head = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        for piece in pieces:
            if pause:
                time.sleep(pause)
            sock.sendall(piece)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    reply_headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        reply_headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), reply_headers, body


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``Transfer-Encoding: chunked`` framing of ``pieces`` (then the last, empty chunk)."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def status_of(content_type: str, body: bytes) -> status_pb2.Status:
    if content_type.startswith(JSON):
        return json_format.Parse(body, status_pb2.Status())
    assert content_type == PROTOBUF, content_type
    return status_pb2.Status.FromString(body)


@pytest.fixture
def small_limit(db_path: Path) -> Iterator[Herald]:
    """A server whose ``max_receive_bytes`` is 256 KiB, to test the limit at its edges."""
    with running_herald(test_config(db_path, server={"max_receive_bytes": SMALL})) as server:
        yield server


SMALL = 256 * 1024


# --- real exporters at their default sizes -------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_http_exporter_default_batches_of_large_spans_are_stored_whole(
    herald: Herald, compression: Compression
) -> None:
    spans = sdk_spans(1024)
    exporter = OTLPSpanExporter(
        endpoint=f"http://{herald.http_address}/v1/traces", compression=compression, timeout=30
    )
    try:
        # Two exports of the BatchSpanProcessor's default batch size (512).
        for batch in (spans[:512], spans[512:]):
            assert exporter.export(batch) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # the OTel exporter leaves it unannotated
    assert len(encode_spans(spans[:512]).SerializeToString()) > 1_000_000
    assert stored_ids(herald) == span_ids(spans)


def test_otlp_json_of_a_default_sdk_batch_is_stored_whole(herald: Herald) -> None:
    # The Python SDK has no OTLP/JSON exporter: send the JSON of the request it would encode.
    spans = sdk_spans(512)
    body = otlp_json(encode_spans(spans))
    assert len(body) > 1_000_000
    reply = httpx.post(
        f"http://{herald.http_address}/v1/traces",
        content=body,
        headers={"Content-Type": JSON},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}  # no partial_success: everything was taken
    assert stored_ids(herald) == span_ids(spans)


# --- bodies arriving in pieces -------------------------------------------------------------


def test_http_body_arriving_in_two_writes_is_read_whole(herald: Herald) -> None:
    request = resource_spans_request(1)
    span = request.resource_spans[0].scope_spans[0].spans
    for i in range(9):  # ten spans under one resource
        extra = span.add()
        extra.CopyFrom(span[0])
        extra.span_id = (100 + i).to_bytes(8, "big")
    body = request.SerializeToString()
    status, _, reply = raw_http(
        herald.http_address,
        "POST",
        "/v1/traces",
        {"Content-Type": PROTOBUF, "Content-Length": str(len(body))},
        split(body, len(body) // 2 + 1),
        pause=0.2,
    )
    assert status == 200, reply
    assert not ExportTraceServiceResponse.FromString(reply).HasField("partial_success")
    assert stored_ids(herald) == request_span_ids(request)
    assert len(request_span_ids(request)) == 10


def test_megabyte_body_in_64k_pieces_is_read_whole(herald: Herald) -> None:
    request = resource_spans_request(1000)
    body = request.SerializeToString()
    assert len(body) > 1_000_000
    status, _, reply = raw_http(
        herald.http_address,
        "POST",
        "/v1/traces",
        {"Content-Type": PROTOBUF, "Content-Length": str(len(body))},
        split(body, 64 * 1024),
        pause=0.01,
    )
    assert status == 200, reply
    assert not ExportTraceServiceResponse.FromString(reply).HasField("partial_success")
    assert stored_ids(herald) == request_span_ids(request)


def test_chunked_body_over_a_raw_socket_is_read_whole(herald: Herald) -> None:
    events = native_events(1000, 250)
    body = orjson.dumps(events)
    # Uneven chunk sizes, some of them tiny, several chunks per socket write.
    sizes = [1, 7, 4096, 13, 65536, 100_000]
    pieces: list[bytes] = []
    at = 0
    while at < len(body):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(body[at : at + size])
        at += size
    framed = b"".join(chunked(pieces))
    status, _, reply = raw_http(
        herald.http_address,
        "POST",
        "/api/events",
        {"Content-Type": JSON, "Transfer-Encoding": "chunked"},
        split(framed, 32 * 1024),
        pause=0.005,
    )
    assert status == 204, reply
    assert stored_ids(herald) == {e["id"] for e in events}


def test_chunked_body_from_an_httpx_generator_is_read_whole(herald: Herald) -> None:
    request = resource_spans_request(1000)
    body = request.SerializeToString()

    def pieces() -> Iterator[bytes]:
        for piece in split(body, 50_000):
            time.sleep(0.002)
            yield piece

    reply = httpx.post(
        f"http://{herald.http_address}/v1/traces",
        content=pieces(),
        headers={"Content-Type": PROTOBUF},
        timeout=30,
    )
    assert reply.request.headers["transfer-encoding"] == "chunked"
    assert reply.status_code == 200, reply.content
    assert stored_ids(herald) == request_span_ids(request)


# --- native ingest and big bodies ----------------------------------------------------------


def test_thousand_native_events_in_one_post_are_all_stored(herald: Herald) -> None:
    events = native_events(1000, 250)
    body = orjson.dumps(events)
    assert 400 * 1000 < len(body) < 500 * 1000  # ~450 bytes per event
    reply = httpx.post(f"http://{herald.http_address}/api/events", content=body, timeout=30)
    assert reply.status_code == 204, reply.text
    assert stored_ids(herald) == {e["id"] for e in events}


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_ten_megabyte_body_is_stored_whole(herald: Herald, encoding: str) -> None:
    events = native_events(100, 100_000)
    body = orjson.dumps(events)
    assert len(body) > 10_000_000
    if encoding == "gzip":
        body = gzip.compress(body, compresslevel=1)
    reply = httpx.post(
        f"http://{herald.http_address}/api/events",
        content=body,
        headers={"Content-Encoding": encoding},
        timeout=60,
    )
    assert reply.status_code == 204, reply.text
    assert stored_ids(herald) == {e["id"] for e in events}
    assert herald.store is not None
    last = herald.store.get_event(events[-1]["id"])
    assert last is not None and last.payload == events[-1]["payload"]


@pytest.mark.slow
def test_sixty_megabyte_body_is_stored_whole(herald: Herald) -> None:
    # Few, large events (1 MB each, under the 1.5 MB event limit) keep this about body size.
    events = native_events(60, 1_000_000)
    body = orjson.dumps(events)
    assert 60_000_000 < len(body) < DEFAULT_LIMIT
    reply = httpx.post(f"http://{herald.http_address}/api/events", content=body, timeout=120)
    assert reply.status_code == 204, reply.text
    assert stored_ids(herald) == {e["id"] for e in events}


# --- the limit, at its edges ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_body_at_or_under_the_limit_is_taken_one_byte_over_is_413(
    small_limit: Herald, encoding: str
) -> None:
    url = f"http://{small_limit.http_address}/api/events"
    headers = {"Content-Type": JSON, "Content-Encoding": encoding}

    def post(events: list[dict[str, Any]], size: int) -> httpx.Response:
        body = padded(events, size)
        if encoding == "gzip":
            body = gzip.compress(body)
        return httpx.post(url, content=body, headers=headers, timeout=30)

    under, at, over = (native_events(100, 1500) for _ in range(3))
    assert post(under, SMALL - 1).status_code == 204
    assert post(at, SMALL).status_code == 204
    reply = post(over, SMALL + 1)
    assert reply.status_code == 413
    assert str(SMALL) in reply.json()["detail"]
    assert stored_ids(small_limit) == {e["id"] for e in under + at}


def test_body_over_the_limit_is_413_without_content_length(small_limit: Herald) -> None:
    events = native_events(10, 1500)
    body = padded(events, SMALL + 1)
    status, _, reply = raw_http(
        small_limit.http_address,
        "POST",
        "/api/events",
        {"Content-Type": JSON, "Transfer-Encoding": "chunked"},
        chunked(split(body, 10_000)),
    )
    assert status == 413
    assert str(SMALL) in orjson.loads(reply)["detail"]
    assert stored(small_limit) == 0


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip"])
def test_otlp_body_over_the_limit_is_413_with_a_status_body(
    small_limit: Herald, content_type: str, framing: str
) -> None:
    request = resource_spans_request(400)
    body = request.SerializeToString() if content_type == PROTOBUF else otlp_json(request)
    assert len(body) > SMALL
    headers = {"Content-Type": content_type}
    pieces: Iterable[bytes] = [body]
    if framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        pieces = chunked(split(body, 16_384))
    else:
        if framing == "gzip":
            body = gzip.compress(body)
            assert len(body) < SMALL
            headers["Content-Encoding"] = "gzip"
            pieces = [body]
        headers["Content-Length"] = str(len(body))
    status, reply_headers, reply = raw_http(
        small_limit.http_address, "POST", "/v1/traces", headers, pieces
    )
    assert status == 413
    assert reply_headers["content-type"].startswith(content_type)
    rpc = status_of(reply_headers["content-type"], reply)
    assert rpc.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert str(SMALL) in rpc.message
    assert stored(small_limit) == 0


@pytest.mark.parametrize("limit", ["small", "default"])
def test_gzip_bomb_is_413_and_nothing_is_stored(db_path: Path, limit: str) -> None:
    max_bytes = SMALL if limit == "small" else DEFAULT_LIMIT
    # Valid events, then enough whitespace to inflate past the limit: a ~70 KB body that
    # would be ~70 MB in memory if inflated without a cap.
    body = orjson.dumps(native_events(5, 100)) + b" " * (max_bytes + 4 * 1024 * 1024)
    bomb = gzip.compress(body, compresslevel=9)
    assert len(bomb) < max_bytes // 20
    with running_herald(test_config(db_path, server={"max_receive_bytes": max_bytes})) as herald:
        reply = httpx.post(
            f"http://{herald.http_address}/api/events",
            content=bomb,
            headers={"Content-Type": JSON, "Content-Encoding": "gzip"},
            timeout=30,
        )
        assert reply.status_code == 413
        assert "decompressed" in reply.json()["detail"]
        assert stored(herald) == 0
