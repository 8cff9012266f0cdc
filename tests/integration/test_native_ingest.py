"""Native ingest against a real server on 127.0.0.1:0 with a real DuckDB file."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import httpx
import pytest

from collector.app import Herald
from collector.client.remote import HeraldClient
from collector.domain.ids import uuid7_str
from collector.errors import PermissionDenied, Unauthenticated
from tests.conftest import INGEST_TOKEN, READ_TOKEN


def order_shipped(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "app.order.shipped",
        "resource": {"prefect.resource.id": "app.order.8812", "region": "eu"},
        "related": [
            {"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}
        ],
        "payload": {"carrier": "DHL"},
        "id": uuid7_str(),
    }
    event.update(over)
    return event


def stored(herald: Herald) -> int:
    assert herald.store is not None
    return herald.store.count_events()


def test_grpc_emit_stores_the_valid_events_and_reports_the_bad_one(herald: Herald) -> None:
    good = [order_shipped(), order_shipped()]
    with HeraldClient(herald.grpc_address) as client:
        accepted, errors = client.emit([good[0], {"event": "broken"}, good[1]])
    assert accepted == 2
    assert errors == [(1, "resource: is required")]
    assert herald.store is not None
    # acknowledged means committed: readable right away
    event = herald.store.get_event(good[1]["id"])
    assert event is not None
    assert event.payload == {"carrier": "DHL"}
    assert event.related[0]["prefect.resource.role"] == "customer"


def test_http_post_events_returns_204_and_stores(herald: Herald) -> None:
    body = [order_shipped(), {"event": "curl.sent", "resource": {"prefect.resource.id": "me"}}]
    reply = httpx.post(f"http://{herald.http_address}/api/events", json=body)
    assert reply.status_code == 204
    assert stored(herald) == 2


def test_http_gzip_body_is_accepted(herald: Herald) -> None:
    import gzip

    import orjson

    reply = httpx.post(
        f"http://{herald.http_address}/api/events",
        content=gzip.compress(orjson.dumps([order_shipped()])),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert reply.status_code == 204
    assert stored(herald) == 1


def test_http_partial_batch_is_422_listing_the_bad_items(herald: Herald) -> None:
    reply = httpx.post(
        f"http://{herald.http_address}/api/events",
        json=[order_shipped(), order_shipped(event="x" * 2000)],
    )
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["index"] == 1
    assert "1024" in reply.json()["errors"][0]["message"]
    assert stored(herald) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b'{"event": "x"}', 400)],
    ids=["undecodable", "not-a-list"],
)
def test_http_bad_body_is_400(herald: Herald, body: bytes, status: int) -> None:
    reply = httpx.post(f"http://{herald.http_address}/api/events", content=body)
    assert reply.status_code == status
    assert reply.json()["detail"]


def test_duplicate_id_is_stored_once(herald: Herald) -> None:
    event = order_shipped()
    with HeraldClient(herald.grpc_address) as client:
        client.emit([event, event])
        client.emit([event])
    httpx.post(f"http://{herald.http_address}/api/events", json=[event])
    assert stored(herald) == 1


def test_concurrent_requests_share_commits_and_all_land(herald: Herald) -> None:
    def send() -> None:
        with HeraldClient(herald.grpc_address) as client:
            for _ in range(5):
                client.emit([order_shipped() for _ in range(200)])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stored(herald) == 4 * 5 * 200


def test_bad_token_is_refused_and_nothing_stored(secured_herald: Herald) -> None:
    for token in (None, "wrong-token-value"):
        with HeraldClient(secured_herald.grpc_address, token=token or "") as client:
            with pytest.raises(Unauthenticated):
                client.emit([order_shipped()])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = httpx.post(
            f"http://{secured_herald.http_address}/api/events",
            json=[order_shipped()],
            headers=headers,
        )
        assert reply.status_code == 401
    assert stored(secured_herald) == 0


def test_token_without_ingest_scope_is_denied(secured_herald: Herald) -> None:
    with HeraldClient(secured_herald.grpc_address, token=READ_TOKEN) as client:
        with pytest.raises(PermissionDenied):
            client.emit([order_shipped()])
    assert stored(secured_herald) == 0


def test_ingest_token_is_accepted(secured_herald: Herald) -> None:
    with HeraldClient(secured_herald.grpc_address, token=INGEST_TOKEN) as client:
        assert client.emit([order_shipped()])[0] == 1
    reply = httpx.post(
        f"http://{secured_herald.http_address}/api/events",
        json=[order_shipped()],
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    )
    assert reply.status_code == 204
    assert stored(secured_herald) == 2


def test_grpc_unauthenticated_status_code(secured_herald: Herald) -> None:
    from collector._proto import herald_pb2, herald_pb2_grpc

    with grpc.insecure_channel(secured_herald.grpc_address) as channel:
        stub = herald_pb2_grpc.HeraldStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Emit(herald_pb2.EmitRequest(events_json=b"[]"))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
