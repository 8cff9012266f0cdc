"""The fast path of native decoding (``json_body_to_columns``: msgspec into typed structs) gives
exactly what the exact path gives (``parse_events_json`` + ``json_events_to_columns``): the same
columns, the same per-item errors, the same body error, for valid, invalid and odd bodies alike.
And a plain valid body really takes the fast path (else the speed-up is silently gone)."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import orjson
import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.errors import InvalidInput
from collector.mapping import native

RECEIVED = 1_780_000_000_000_000  # 2026-05-28
LIMITS = Limits(
    max_labels_per_resource=6,
    max_related_resources=3,
    max_event_name_length=40,
    max_event_bytes=2_000,
    max_future_seconds=3_600,
)
V7_IN_RANGE = "0190a0b0-c0d0-7e0f-8a1b-2c3d4e5f6a7b"  # 2024-06
V7_FUTURE = "ffffa0b0-c0d0-7e0f-8a1b-2c3d4e5f6a7b"

SIX_MORE = {f"k{i}": "v" for i in range(6)}
Outcome = tuple[str, Any, Any]


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "app.order.shipped",
        "resource": {"prefect.resource.id": "app.order.1", "prefect.resource.name": "one"},
        "related": [{"prefect.resource.id": "app.customer.7", "prefect.resource.role": "buyer"}],
        "payload": {"amount": 12.5, "currency": "EUR", "items": [1, 2, {"x": None}]},
        "id": str(uuid.uuid4()),
        "occurred": "2026-05-28T10:00:00.123456+02:00",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def exact(body: bytes, limits: Limits = LIMITS) -> Outcome:
    try:
        items = native.parse_events_json(body)
    except InvalidInput as exc:
        return ("body", str(exc), None)
    cols, errors = native.json_events_to_columns(items, RECEIVED, limits)
    return ("items", cols, errors)


def fast(body: bytes, limits: Limits = LIMITS) -> Outcome:
    try:
        cols, errors = native.json_body_to_columns(body, RECEIVED, limits)
    except InvalidInput as exc:
        return ("body", str(exc), None)
    return ("items", cols, errors)


def masked(body: bytes, outcome: Outcome) -> Outcome:
    """``outcome`` with the ids ingest made up (random UUIDv7s) replaced by a marker: the ids
    taken from the body are compared, and those are the only ones whose digits it holds."""
    kind, cols, _ = outcome
    if kind == "items":
        digits = body.lower().replace(b"-", b"")
        cols.ids = [i if i.replace("-", "").encode() in digits else "made up" for i in cols.ids]
    return outcome


def assert_same(body: bytes, limits: Limits = LIMITS) -> None:
    assert masked(body, fast(body, limits)) == masked(body, exact(body, limits)), body[:300]


def test_a_plain_valid_body_takes_the_fast_path_and_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [event(), event(occurred=_DROP, id=V7_IN_RANGE), event(related=[], payload=None)]
    items.append(event(occurred="2026-05-28T09:00:00", follows=str(uuid.uuid4())))
    body = orjson.dumps(items)
    expected = exact(body)

    def exact_decoding_is_not_needed(body: bytes) -> list[Any]:
        raise AssertionError("the fast path gave up on a plain valid body")

    monkeypatch.setattr(native, "parse_events_json", exact_decoding_is_not_needed)
    kind, cols, errors = fast(body)
    assert (kind, len(cols), errors) == ("items", 4, [])
    assert (kind, cols, errors) == expected


def test_generated_ids_are_uuid7_and_the_rest_matches() -> None:
    body = orjson.dumps([event(id=_DROP), event(id=None, occurred=None)])
    kind, cols, errors = fast(body)
    _, expected, _ = exact(body)
    assert kind == "items" and errors == []
    assert isinstance(cols, EventColumns) and isinstance(expected, EventColumns)
    assert all(uuid.UUID(i).version == 7 for i in cols.ids)
    cols.ids = expected.ids
    assert cols == expected


def test_ids_made_for_a_large_batch_are_distinct_canonical_uuid7s_of_now() -> None:
    # 600 events: the fast path draws new ids in chunks, so this crosses chunk boundaries.
    body = orjson.dumps([event(id=_DROP) for _ in range(600)])
    before_ms = time.time_ns() // 1_000_000
    cols, errors = native.json_body_to_columns(body, RECEIVED, LIMITS)
    after_ms = time.time_ns() // 1_000_000
    assert errors == [] and len(set(cols.ids)) == 600
    for made in cols.ids:
        parsed = uuid.UUID(made)
        assert str(parsed) == made
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before_ms <= parsed.int >> 80 <= after_ms
    # The 74 random bits vary: every hex digit of rand_b shows up in its first position.
    assert len({made[24] for made in cols.ids}) == 16


ODD_ITEMS: list[Any] = [
    event(event=""),
    event(event="x" * 41),
    event(event=7),
    event(event=_DROP),
    event(resource=None),
    event(resource=_DROP),
    event(resource=[]),
    event(resource={"prefect.resource.name": "no id"}),
    event(resource={"prefect.resource.id": ""}),
    event(resource={"prefect.resource.id": 5}),
    event(resource={"prefect.resource.id": "r", "n": 1}),
    event(resource={"prefect.resource.id": "r", "n": None}),
    event(resource={"prefect.resource.id": "r", **SIX_MORE}),
    event(related=None),
    event(related={}),
    event(related=""),
    event(related=0),
    event(related=False),
    event(related="abc"),
    event(related=[{"prefect.resource.id": "r"}]),
    event(related=[{"prefect.resource.id": "r", "prefect.resource.role": ""}]),
    event(related=[{"prefect.resource.role": "r"}]),
    event(related=[{"prefect.resource.id": "r", "prefect.resource.role": "x"}] * 4),
    event(related=[{"prefect.resource.id": "r", "prefect.resource.role": "x", "n": 2}]),
    event(related=[None]),
    event(related=[{"prefect.resource.id": "r", "prefect.resource.role": "x", **SIX_MORE}]),
    event(payload=None),
    event(payload=_DROP),
    event(payload=[]),
    event(payload="text"),
    event(payload={}),
    event(payload={"big": 2**63, "neg": -(2**63), "f": 1e308, "t": True, "s": "\u00e9\u2603\x00"}),
    event(payload={"text": "x" * 3_000}),
    event(id=None),
    event(id=5),
    event(id=""),
    event(id="not-a-uuid"),
    event(id=str(uuid.uuid4()).upper()),
    event(id="{" + str(uuid.uuid4()) + "}"),
    event(id=str(uuid.uuid4()).replace("-", "")),
    event(id=str(uuid.uuid4()) + "\n"),
    event(id="urn:uuid:" + str(uuid.uuid4())),
    event(id=V7_IN_RANGE, occurred=_DROP),
    event(id=V7_FUTURE, occurred=_DROP),
    event(id=V7_FUTURE, occurred=None),
    event(id="00000000-0000-7000-8000-000000000000", occurred=None),
    event(occurred=None),
    event(occurred=12),
    event(occurred=""),
    event(occurred="yesterday"),
    event(occurred="2026-05-28"),
    event(occurred="2026-05-28T10:00:00Z"),
    event(occurred="2026-05-28 10:00"),
    event(occurred="1999-12-31T23:59:59.999999Z"),
    event(occurred="2000-01-01T00:00:00Z"),
    event(occurred="2026-05-28T23:00:00+00:00"),
    event(occurred="9999-12-31T23:59:59-01:00"),
    event(occurred="0001-01-01T00:00:00+01:00"),
    event(follows=5),
    event(follows="nope"),
    event(follows=str(uuid.uuid4()).upper()),
    event(follows=str(uuid.uuid4()) + "\n"),
    event(extra="unknown fields are ignored"),
    event(extra={"nested": [1, 2, 3]}),
    None,
    7,
    "event",
    [],
    [event()],
    {},
]


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return value


@pytest.mark.parametrize("index", range(len(ODD_ITEMS)))
def test_odd_items_give_the_same_result_either_way(index: int) -> None:
    item = ODD_ITEMS[index]
    assert_same(orjson.dumps([event(), item, event()]))
    assert_same(orjson.dumps([item]))


@pytest.mark.parametrize("levels", [127, 128, 129, 300])
def test_deep_payloads_give_the_same_result_either_way(levels: int) -> None:
    payload = _deep(levels)
    body = b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":' + (
        b'{"d":' * levels + b"1" + b"}" * levels + b"}]"
    )
    assert orjson.loads(body)[0]["payload"] == payload
    assert_same(body)


NUMBERS = [
    b"-0",
    b"0.0",
    b"1.5e-400",
    b"5e-324",
    b"0.30000000000000004",
    b"1.7976931348623157e308",
    b"18446744073709551615",
    b"-9223372036854775808",
    b"123456789012345678901234567890",
]
RAW_BODIES = [
    b"",
    b"   ",
    b"{}",
    b"null",
    b"[]",
    b" [ ] ",
    b"\xef\xbb\xbf[]",
    b"[1,]",
    b"[{}]",
    b'[{"event":"e","resource":{"prefect.resource.id":"r"}}] x',
    # msgspec skips unknown fields and raw values without orjson's checks: these must still
    # be the body errors orjson makes of them.
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"zz":1e400}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"zz":"\xff"}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":1e400}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":"\xed\xa0\x80"}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":NaN}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":18446744073709551616}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":-9223372036854775809}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r"},"payload":{"a":1e-400}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r\\ud800"}}]',
    b'[{"event":"e","resource":{"prefect.resource.id":"r","x":"\\ud83d\\ude00\\u0000"}}]',
    # Duplicate keys (the last wins) and escaped keys.
    b'[{"event":"a","event":"b","resource":{"prefect.resource.id":"r","k":"1","k":"2"}}]',
    b'[{"event":"a","resource":{"prefect.resource.id":"r","k":1,"k":"2"}}]',
    b'[{"\\u0065vent":"a","resource":{"prefect.resource.id":"r"}}]',
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{"a":1,"a":{"b":2}}}]',
    b'[\n\t{ "event" : "a" , "resource" : { "prefect.resource.id" : "r" } }\r\n]',
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{"n":-0.0,"e":1E2}}]',
    b"[" * 2_000 + b"]" * 2_000,
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{"d":' * 900
    + b"1"
    + b"}}" * 900
    + b"]",
    # Payload numbers: integers past 64 bits are floats to orjson and ints to msgspec.
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{'
    + b",".join(b'"n%d":%s' % pair for pair in enumerate(NUMBERS))
    + b"}}]",
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{'
    + b",".join(b'"n%d":%s' % pair for pair in enumerate(NUMBERS[:-1]))
    + b"}}]",
    b'[{"event":"a","resource":{"prefect.resource.id":"r"},"payload":{"n":18446744073709551616}}]',
]


@pytest.mark.parametrize("index", range(len(RAW_BODIES)))
def test_odd_bodies_give_the_same_result_either_way(index: int) -> None:
    assert_same(RAW_BODIES[index])


def test_limits_are_the_callers_not_the_decoders() -> None:
    body = orjson.dumps([event(event="x" * 41), event()])
    assert_same(body, Limits())
    assert_same(body, LIMITS)
    assert fast(body, Limits())[2] == [] and fast(body, LIMITS)[2] != []


def test_random_corruptions_of_a_body_give_the_same_result_either_way() -> None:
    rng = random.Random(13)
    items = [event() for _ in range(3)]
    items[1]["occurred"] = None
    good = orjson.dumps(items)
    alphabet = b'{}[]",:0123456789.eE+-ntfrue\\ ax\xff'
    for _ in range(400):
        body = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body))
            action = rng.randrange(3)
            if action == 0:
                body[at] = rng.choice(alphabet)
            elif action == 1:
                del body[at]
            else:
                body.insert(at, rng.choice(alphabet))
        assert_same(bytes(body))
