"""The event grammar and its limits (SPEC §2, Prefect P§1.2), through both validation paths:
the pydantic ``Event`` (SDK) and the hand-written native mapping (HTTP/gRPC hot path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from collector.domain.events import (
    MAX_PAYLOAD_DEPTH,
    Event,
    Limits,
    check_event_parts,
    datetime_to_us,
    describe_us,
    format_time,
    nested_deeper_than,
    parse_event,
)
from collector.errors import EventTooLarge, InvalidEvent
from collector.mapping import native as native_mapping
from collector.mapping.native import json_events_to_columns

SMALL = Limits(
    max_labels_per_resource=10,
    max_related_resources=10,
    max_event_name_length=20,
    max_event_bytes=2000,
)
RECEIVED = datetime_to_us(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))


def spider_walked(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "spider.walked",
        "resource": {"prefect.resource.id": "spider.1", "prefect.resource.name": "Charlotte"},
        "related": [{"prefect.resource.id": "web.9", "prefect.resource.role": "home"}],
        "payload": {"legs": 8},
    }
    event.update(over)
    return event


def native_error(item: dict[str, Any]) -> str | None:
    cols, errors = json_events_to_columns([item], RECEIVED, SMALL)
    if errors:
        assert len(cols) == 0
        return errors[0][1]
    assert len(cols) == 1
    return None


def pydantic_error(item: dict[str, Any]) -> str | None:
    try:
        parse_event(item).check(SMALL)
    except (InvalidEvent, EventTooLarge) as exc:
        return str(exc)
    return None


BAD = [
    pytest.param({"resource": {}}, "prefect.resource.id", id="resource-without-id"),
    pytest.param({"resource": {"prefect.resource.id": ""}}, "non-empty", id="empty-id"),
    pytest.param(
        {"resource": {"prefect.resource.id": "a", "n": 5}}, "must be strings", id="int-label"
    ),
    pytest.param(
        {"resource": {"prefect.resource.id": "a", "n": None}}, "must be strings", id="none-label"
    ),
    pytest.param(
        {"resource": {"prefect.resource.id": "a", **{f"k{i}": "v" for i in range(10)}}},
        "at most 10",
        id="id-plus-ten-labels",
    ),
    pytest.param(
        {"related": [{"prefect.resource.id": "x"}]}, "prefect.resource.role", id="related-no-role"
    ),
    pytest.param(
        {
            "related": [
                {"prefect.resource.id": f"x{i}", "prefect.resource.role": "r"} for i in range(11)
            ]
        },
        "at most 10",
        id="eleven-related",
    ),
    pytest.param({"event": "x" * 21}, "at most 20 characters", id="name-too-long"),
    pytest.param({"payload": {"blob": "x" * 3000}}, "bytes", id="too-large"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_invalid_events_are_rejected_naming_the_rule(change: dict[str, Any], message: str) -> None:
    item = spider_walked(**change)
    for error in (native_error(item), pydantic_error(item)):
        assert error is not None and message in error


def test_limits_are_inclusive() -> None:
    labels = {"prefect.resource.id": "a", **{f"k{i}": "v" for i in range(9)}}
    related = [{"prefect.resource.id": f"x{i}", "prefect.resource.role": "r"} for i in range(10)]
    item = spider_walked(resource=labels, related=related, event="x" * 20)
    assert native_error(item) is None
    assert pydantic_error(item) is None


def test_native_defaults_id_and_occurred() -> None:
    cols, errors = json_events_to_columns([spider_walked(), spider_walked()], RECEIVED, SMALL)
    assert not errors
    assert cols.occurred_us == [RECEIVED, RECEIVED]
    assert cols.ids[0] != cols.ids[1]
    assert cols.ids[0][14] == "7"  # UUIDv7


def test_naive_occurred_is_utc_and_offsets_are_converted() -> None:
    cols, _ = json_events_to_columns(
        [
            spider_walked(occurred="2026-01-02T03:04:05.000006"),
            spider_walked(occurred="2026-01-02T05:04:05.000006+02:00"),
        ],
        RECEIVED,
        SMALL,
    )
    expected = datetime_to_us(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert cols.occurred_us == [expected, expected]
    event = parse_event(spider_walked(occurred="2026-01-02T03:04:05"))
    assert event.occurred == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_batch_keeps_the_valid_events_and_names_the_bad_ones() -> None:
    items = [spider_walked(), {"event": "x"}, spider_walked(id="not-a-uuid"), 7, spider_walked()]
    cols, errors = json_events_to_columns(items, RECEIVED, SMALL)
    assert len(cols) == 2
    assert [i for i, _ in errors] == [1, 2, 3]
    assert "resource: is required" in errors[0][1]
    assert "id: 'not-a-uuid' is not a UUID" in errors[1][1]


def test_columns_keep_labels_in_order() -> None:
    cols, _ = json_events_to_columns([spider_walked()], RECEIVED, SMALL)
    assert cols.resource(0) == {
        "prefect.resource.id": "spider.1",
        "prefect.resource.name": "Charlotte",
    }
    assert cols.related_resources(0) == [
        {"prefect.resource.id": "web.9", "prefect.resource.role": "home"}
    ]
    assert cols.payloads == ['{"legs":8}']


def test_json_shape_matches_prefect() -> None:
    event = Event(
        occurred=datetime(2021, 2, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1))),
        event="a.b",
        resource={"prefect.resource.id": "r"},
    )
    data = event.to_dict()
    assert list(data) == ["occurred", "event", "resource", "related", "payload", "id", "follows"]
    assert data["occurred"] == "2021-02-03T03:05:06.000007Z"
    assert format_time(datetime(2021, 1, 1)) == "2021-01-01T00:00:00.000000Z"


# --- time range and nesting (docs/ingest.md "Validation") -----------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": [1, 2]}  # the list is a level too
    for _ in range(depth - 2):
        value = {"k": value}
    return value


def test_payload_depth_limit_is_inclusive_in_both_paths() -> None:
    big = Limits(max_event_bytes=10_000)
    assert nested_deeper_than(nested(MAX_PAYLOAD_DEPTH), MAX_PAYLOAD_DEPTH) is False
    assert nested_deeper_than(nested(MAX_PAYLOAD_DEPTH + 1), MAX_PAYLOAD_DEPTH) is True
    ok = spider_walked(payload=nested(MAX_PAYLOAD_DEPTH))
    cols, errors = json_events_to_columns([ok], RECEIVED, big)
    assert (len(cols), errors) == (1, [])
    parse_event(ok).check(big)
    for depth in (MAX_PAYLOAD_DEPTH + 1, 254, 255, 900):
        deep = spider_walked(payload=nested(depth))
        cols, errors = json_events_to_columns([deep], RECEIVED, big)
        assert errors == [(0, f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels")]
        with pytest.raises(InvalidEvent, match="nested deeper than"):
            parse_event(deep).check(big)


def test_wide_payloads_with_many_brackets_are_not_mistaken_for_deep_ones() -> None:
    wide = spider_walked(payload={"rows": [{"a": [i]} for i in range(500)]})
    cols, errors = json_events_to_columns([wide], RECEIVED, Limits())
    assert (len(cols), errors) == (1, [])


def test_occurred_range_is_inclusive_and_counts_from_the_received_time() -> None:
    limits = Limits(max_future_seconds=60)
    ahead = RECEIVED + 60_000_000

    def error(**over: Any) -> str | None:
        _, errors = json_events_to_columns([spider_walked(**over)], RECEIVED, limits)
        return errors[0][1] if errors else None

    assert error(occurred="2000-01-01T00:00:00Z") is None
    assert error(occurred="1999-12-31T23:59:59.999999Z") == (
        "occurred: 1999-12-31T23:59:59.999999Z is before 2000-01-01T00:00:00Z, "
        "the earliest time Herald accepts"
    )
    assert error(occurred=describe_us(ahead)) is None
    assert error(occurred=describe_us(ahead + 1)) == (
        f"occurred: {describe_us(ahead + 1)} is more than 60 s ahead of the server's clock "
        f"({describe_us(RECEIVED)})"
    )
    message = error(id="ffffffff-ffff-7fff-bfff-ffffffffffff")
    assert message is not None and message.startswith("id: without occurred, a UUIDv7 id's time")
    assert "10889-08-02T05:31:50.655000Z" in message and message.endswith("; send occurred")
    # an explicit occurred wins over the id's time, so the id is then only an id
    assert error(id="ffffffff-ffff-7fff-bfff-ffffffffffff", occurred="2026-01-01T00:00:00") is None


def test_occurred_with_an_offset_at_the_ends_of_datetimes_range_is_an_error_not_a_crash() -> None:
    for value in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        _, errors = json_events_to_columns([spider_walked(occurred=value)], RECEIVED, SMALL)
        assert errors[0][1].startswith("occurred: ")
        with pytest.raises(InvalidEvent, match="occurred"):
            parse_event(spider_walked(occurred=value))


def test_an_unexpected_failure_mapping_one_item_is_that_items_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = check_event_parts

    def flaky(name: Any, *args: Any) -> None:
        if name == "boom":
            raise ZeroDivisionError("a bug")
        real(name, *args)

    monkeypatch.setattr(native_mapping, "check_event_parts", flaky)
    items = [spider_walked(), spider_walked(event="boom"), spider_walked(event="boom")]
    cols, errors = json_events_to_columns(items, RECEIVED, SMALL)
    assert len(cols) == 1
    assert errors == [(1, native_mapping.UNEXPECTED), (2, native_mapping.UNEXPECTED)]
    assert "ZeroDivision" not in native_mapping.UNEXPECTED
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1  # once per batch, with the traceback
