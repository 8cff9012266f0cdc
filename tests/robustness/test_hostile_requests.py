"""Hostile requests get a clear 4xx (or INVALID_ARGUMENT), never a 500, a traceback or a
silent loss: undecodable ``Authorization`` bytes, ``count-by`` intervals that are not finite
numbers or overflow, gzip bodies with several members, trailing garbage or no trailer, and a
client that goes away mid-body."""

from __future__ import annotations

import gzip
import logging
import math
import re
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector._proto import herald_pb2, herald_pb2_grpc
from collector.app import Herald
from collector.domain.ids import derived_uuid, uuid7_str
from collector.testing import running_herald, test_config
from tests.conftest import INGEST_TOKEN, READ_TOKEN

# A Python exception class name in a message meant for a client ("OverflowError: …").
CLASS_NAME = re.compile(r"[A-Z][A-Za-z]*(Error|Exception)\b")


def stored(herald: Herald) -> int:
    assert herald.store is not None
    return herald.store.count_events()


def stored_ids(herald: Herald) -> set[str]:
    assert herald.store is not None
    cur = herald.store.cursor()
    try:
        return {row[0] for row in cur.execute("SELECT id::VARCHAR FROM events").fetchall()}
    finally:
        cur.close()


def event(i: int) -> dict[str, Any]:
    return {
        "id": uuid7_str(),
        "event": "app.order.shipped",
        "resource": {"prefect.resource.id": f"app.order.{i}"},
    }


def raw_request(address: str, head: bytes, body: bytes = b"") -> tuple[int, str, bytes]:
    """Send ``head`` (the request line and headers, as raw bytes) and ``body``; returns
    (status, content type, body) of the answer, read to EOF (``Connection: close``)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, reply = bytes(received).partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    content_type = ""
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-type":
            content_type = value.strip()
    return int(lines[0].split()[1]), content_type, reply


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def one_span_request(n: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = (0xABC << 100 | n).to_bytes(16, "big")
    span.span_id = (n + 1).to_bytes(8, "big")
    span.name = f"op-{n}"
    span.start_time_unix_nano = 1_764_000_000_000_000_000
    span.end_time_unix_nano = 1_764_000_000_500_000_000
    return request


def span_id_of(request: ExportTraceServiceRequest) -> str:
    span = request.resource_spans[0].scope_spans[0].spans[0]
    return derived_uuid(b"span", span.trace_id, span.span_id)


# --- Authorization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\xfd-not-utf8",
        b"Bearer test-ingest-\xe9",  # latin-1 é: a near miss of the real token
        b"\xc3\x28 garbage",
    ],
)
@pytest.mark.parametrize("path", ["/api/events", "/v1/traces"])
def test_non_utf8_authorization_is_401_without_a_traceback(
    secured_herald: Herald, caplog: pytest.LogCaptureFixture, value: bytes, path: str
) -> None:
    content_type = "application/json"
    body = orjson.dumps([event(0)]) if path == "/api/events" else b"{}"
    head = (
        (
            f"POST {path} HTTP/1.1\r\nHost: herald\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        + b"Authorization: "
        + value
        + b"\r\n"
    )
    with caplog.at_level(logging.INFO):
        status, reply_type, reply = raw_request(secured_herald.http_address, head, body)
    assert status == 401, reply
    if path == "/v1/traces":  # OTLP: a google.rpc.Status body, as for any other error
        assert reply_type.startswith("application/json")
        rpc = json_format.Parse(reply, status_pb2.Status())
        assert rpc.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    else:
        assert "token" in orjson.loads(reply)["detail"]
    assert tracebacks(caplog) == []
    assert stored(secured_herald) == 0

    # The server is fine afterwards: the real token still works.
    ok = httpx.post(
        f"http://{secured_herald.http_address}/api/events",
        json=[event(1)],
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    )
    assert ok.status_code == 204
    assert stored(secured_herald) == 1


# --- count-by time_interval ------------------------------------------------------------------


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    """One server for the many count-by cases (they only read, and store nothing)."""
    db = tmp_path_factory.mktemp("count-by") / "herald.duckdb"
    with running_herald(test_config(db)) as server:
        yield server


# Not a finite number of at least 0.01: refused whatever is counted (as Prefect validates the
# field). A huge finite interval is refused only where buckets are made (countable "time").
BAD_INTERVALS: list[Any] = [
    "abc",
    "NaN",
    "inf",
    "-Infinity",
    "1" * 400,  # a number too big for a float
    -1,
    0,
    0.001,
    None,
    True,
    [1],
    {"n": 1},
]


@pytest.mark.parametrize("interval", BAD_INTERVALS, ids=repr)
@pytest.mark.parametrize("countable", ["time", "event"])
def test_count_by_bad_time_interval_is_400_with_a_clear_message(
    counting: Herald, caplog: pytest.LogCaptureFixture, interval: Any, countable: str
) -> None:
    reply = httpx.post(
        f"http://{counting.http_address}/api/events/count-by/{countable}",
        content=orjson.dumps({"filter": {}, "time_unit": "hour", "time_interval": interval}),
    )
    assert reply.status_code == 400, reply.text
    detail = reply.json()["detail"]
    assert "time_interval" in detail or "interval" in detail
    assert not CLASS_NAME.search(detail), detail
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(
    ("unit", "interval"),
    [("week", 1e6), ("day", 1e9), ("second", 1e17), ("week", 1e308), ("hour", "1e308")],
)
def test_count_by_interval_beyond_the_calendar_is_400(
    counting: Herald, caplog: pytest.LogCaptureFixture, unit: str, interval: float
) -> None:
    # Finite and >= 0.01, but its buckets would start before year 1 or end after 9999.
    reply = httpx.post(
        f"http://{counting.http_address}/api/events/count-by/time",
        json={"filter": {}, "time_unit": unit, "time_interval": interval},
    )
    assert reply.status_code == 400, reply.text
    assert "time_interval" in reply.json()["detail"]
    assert not CLASS_NAME.search(reply.json()["detail"])
    assert tracebacks(caplog) == []


def test_count_by_interval_as_a_numeric_string_is_taken(counting: Herald) -> None:
    # Prefect's model takes "2" for a float field; so do we.
    reply = httpx.post(
        f"http://{counting.http_address}/api/events/count-by/time",
        json={"filter": {}, "time_unit": "day", "time_interval": "2"},
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("countable", "interval"),
    [
        *[("time", v) for v in (math.nan, math.inf, -math.inf, 1e308, 1e17, -1.0, 0.001)],
        *[("event", v) for v in (math.nan, math.inf, -math.inf, -1.0, 0.001)],
    ],
    ids=repr,
)
def test_grpc_count_events_bad_interval_is_invalid_argument(
    counting: Herald, caplog: pytest.LogCaptureFixture, interval: float, countable: str
) -> None:
    with grpc.insecure_channel(counting.grpc_address) as channel:
        stub = herald_pb2_grpc.HeraldStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CountEvents(
                herald_pb2.CountRequest(
                    countable=countable, time_unit="second", time_interval=interval
                ),
                timeout=10,
            )
    details = info.value.details() or ""
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "interval" in details
    assert not CLASS_NAME.search(details), details
    assert tracebacks(caplog) == []


# --- gzip framing ----------------------------------------------------------------------------


def post_gzip(herald: Herald, path: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"http://{herald.http_address}{path}",
        content=body,
        headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
    )


def test_gzip_body_of_two_members_stores_both_members_events(herald: Herald) -> None:
    events = [event(i) for i in range(4)]
    text = orjson.dumps(events)
    cut = len(text) // 2  # the JSON is split mid-token across the members
    body = gzip.compress(text[:cut]) + gzip.compress(text[cut:])
    reply = post_gzip(herald, "/api/events", body, "application/json")
    assert reply.status_code == 204, reply.text
    assert stored_ids(herald) == {e["id"] for e in events}

    # OTLP/protobuf too: two requests' bytes concatenate into one valid message.
    first, second = one_span_request(1), one_span_request(2)
    body = gzip.compress(first.SerializeToString()) + gzip.compress(second.SerializeToString())
    reply = post_gzip(herald, "/v1/traces", body, "application/x-protobuf")
    assert reply.status_code == 200, reply.content
    assert {span_id_of(first), span_id_of(second)} <= stored_ids(herald)


@pytest.fixture(params=["/api/events", "/v1/traces"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, bytes, str]]:
    """(path, valid uncompressed body, content type) for a native and an OTLP route."""
    if request.param == "/api/events":
        yield request.param, orjson.dumps([event(i) for i in range(3)]), "application/json"
    else:
        yield request.param, one_span_request(7).SerializeToString(), "application/x-protobuf"


def assert_refused_as_bad_input(reply: httpx.Response, words: str) -> None:
    assert reply.status_code == 400, reply.content
    if reply.headers["content-type"] == "application/x-protobuf":
        rpc = status_pb2.Status.FromString(reply.content)
        assert rpc.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        message = rpc.message
    else:
        message = reply.json()["detail"]
    assert words in message, message


@pytest.mark.parametrize(
    "garbage", [b"garbage", b"\x00\x00\x00\x00", b"\x1f", b"\x1f\x8b\x08\x00junk"], ids=repr
)
def test_gzip_with_trailing_garbage_is_400_and_stores_nothing(
    herald: Herald, target: tuple[str, bytes, str], garbage: bytes
) -> None:
    path, body, content_type = target
    reply = post_gzip(herald, path, gzip.compress(body) + garbage, content_type)
    assert_refused_as_bad_input(reply, "gzip")
    assert stored(herald) == 0


@pytest.mark.parametrize("cut", [4, 8, 20], ids=lambda n: f"last-{n}-bytes-missing")
def test_truncated_gzip_is_400_and_stores_nothing(
    herald: Herald, target: tuple[str, bytes, str], cut: int
) -> None:
    path, body, content_type = target
    reply = post_gzip(herald, path, gzip.compress(body)[:-cut], content_type)
    assert_refused_as_bad_input(reply, "truncated")
    assert stored(herald) == 0


def test_deflate_with_trailing_data_or_truncated_is_400(herald: Herald) -> None:
    body = orjson.dumps([event(0)])
    url = f"http://{herald.http_address}/api/events"
    headers = {"Content-Encoding": "deflate"}
    for bad in (zlib.compress(body) + b"x", zlib.compress(body)[:-3]):
        reply = httpx.post(url, content=bad, headers=headers)
        assert reply.status_code == 400, reply.text
        assert "deflate" in reply.json()["detail"]
    assert httpx.post(url, content=zlib.compress(body), headers=headers).status_code == 204
    assert stored(herald) == 1


# --- a client that goes away ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/events", "/v1/traces"])
def test_client_leaving_mid_body_stores_nothing_and_logs_no_traceback(
    herald: Herald, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    body = orjson.dumps([event(i) for i in range(100)])
    host, port = herald.http_address.rsplit(":", 1)
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
            sock.shutdown(socket.SHUT_WR)  # the server sees EOF before the body's end
            assert sock.recv(65536) == b""  # it closes without an answer: none can be read
        # Served normally afterwards.
        ok = httpx.post(f"http://{herald.http_address}/api/events", json=[event(1000)])
        assert ok.status_code == 204
    assert tracebacks(caplog) == []
    assert stored(herald) == 1


def test_read_token_is_refused_for_ingest_with_undecodable_bytes_elsewhere(
    secured_herald: Herald,
) -> None:
    # Undecodable bytes in an unrelated header do not disturb auth.
    body = orjson.dumps([event(0)])
    head = (
        f"POST /api/events HTTP/1.1\r\nHost: herald\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Bearer {READ_TOKEN}\r\n"
    ).encode() + b"X-Note: \xff\xfe\r\n"
    status, _, reply = raw_request(secured_herald.http_address, head, body)
    assert status == 403, reply
    assert stored(secured_herald) == 0
