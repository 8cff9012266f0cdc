"""OTel trace/span ids as Herald resource ids (``domain/otel_ids.py``): a related filter on a
bare hex trace or span id finds the stored ``otel.trace.<hex>`` / ``otel.span.<hex>`` on every
path (in memory on an event and on its JSON, in SQL on a real store), and still matches a
related id that *is* bare hex exactly; a user's trace id is checked with a clear reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.domain.filters import EventRelatedFilter, parse_filter
from collector.domain.otel_ids import parse_trace_id, related_id_forms
from collector.errors import InvalidInput
from tests.unit.test_filters import World, WorldEvents, _world

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SERVICE = {"prefect.resource.id": "otel.service.checkout", "prefect.resource.name": "checkout"}

EVENTS: WorldEvents = {
    "span": (
        1,
        "otel.span.error",
        SERVICE,
        [
            {
                "prefect.resource.id": f"otel.span.{SPAN}",
                "prefect.resource.role": "span",
                "otel.trace_id": TRACE,
            },
            {"prefect.resource.id": f"otel.trace.{TRACE}", "prefect.resource.role": "trace"},
        ],
        {},
    ),
    "child": (
        2,
        "otel.span.ok",
        SERVICE,
        [
            {"prefect.resource.id": "otel.span.1111111111111111", "prefect.resource.role": "span"},
            {"prefect.resource.id": f"otel.trace.{TRACE}", "prefect.resource.role": "trace"},
            {"prefect.resource.id": f"otel.span.{SPAN}", "prefect.resource.role": "parent-span"},
        ],
        {},
    ),
    "other_trace": (
        3,
        "otel.span.ok",
        SERVICE,
        [{"prefect.resource.id": f"otel.trace.{'1' * 32}", "prefect.resource.role": "trace"}],
        {},
    ),
    # A native event whose related id is bare hex: Prefect's exact match still finds it.
    "bare": (
        4,
        "app.job.done",
        {"prefect.resource.id": "app.job.1"},
        [{"prefect.resource.id": TRACE, "prefect.resource.role": "trace"}],
        {},
    ),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = _world(EVENTS, Path(tmp_path_factory.mktemp("otel_ids")) / "t.duckdb")
    yield w
    w.cur.close()
    w.store.close()


@pytest.mark.parametrize(
    ("related", "expected"),
    [
        pytest.param({"role": ["trace"], "id": [TRACE]}, {"span", "child", "bare"}, id="trace"),
        pytest.param({"role": ["trace"], "id": [TRACE.upper()]}, {"span", "child"}, id="upper"),
        pytest.param({"id": [TRACE]}, {"span", "child", "bare"}, id="no-role"),
        pytest.param(
            {"role": ["trace"], "id": [f"otel.trace.{TRACE}"]}, {"span", "child"}, id="stored-id"
        ),
        pytest.param({"role": ["span"], "id": [SPAN]}, {"span"}, id="span"),
        pytest.param({"role": ["parent-span"], "id": [SPAN]}, {"child"}, id="parent"),
        # A trace id asked for in a span role is not widened: it names no span.
        pytest.param({"role": ["span"], "id": [TRACE]}, set(), id="wrong-role"),
        pytest.param(
            {"resources_in_roles": [[TRACE, "trace"]]}, {"span", "child", "bare"}, id="pairs"
        ),
        # The id as a label pattern (the web feed's related filter).
        pytest.param(
            {"role": ["trace"], "labels": {"prefect.resource.id": TRACE}},
            {"span", "child", "bare"},
            id="label",
        ),
        pytest.param(
            {"labels": {"prefect.resource.id": [SPAN, "app.none"]}}, {"span", "child"}, id="labels"
        ),
        pytest.param(
            {"labels": {"prefect.resource.id": f"!{TRACE}"}, "role": ["trace"]},
            {"span", "child", "other_trace"},
            id="negated-untouched",
        ),
    ],
)
def test_related_hex_ids_agree_in_memory_and_in_sql(
    world: World, related: dict[str, Any], expected: set[str]
) -> None:
    world.check({"related": related}, expected)


def test_widened_filter_round_trips() -> None:
    flt = parse_filter({"related": {"role": ["trace"], "id": [TRACE]}})
    part = flt.related
    assert isinstance(part, EventRelatedFilter)
    assert part.id == [TRACE, f"otel.trace.{TRACE}"]
    # Parsing its own JSON again (a page token, the tail) widens nothing twice.
    assert parse_filter(flt.to_json()) == flt


def test_id_forms() -> None:
    assert related_id_forms("app.order.1", ["trace"]) == ["app.order.1"]
    assert related_id_forms(SPAN, None) == [SPAN, f"otel.span.{SPAN}"]
    assert related_id_forms(SPAN, ["link"]) == [SPAN, f"otel.span.{SPAN}"]
    assert related_id_forms(SPAN, ["trace"]) == [SPAN]
    assert related_id_forms(TRACE + "0", ["trace"]) == [TRACE + "0"]


def test_trace_id_of_a_user() -> None:
    assert parse_trace_id(TRACE.upper()) == TRACE
    assert parse_trace_id(f" otel.trace.{TRACE} ") == TRACE
    for bad, reason in [
        ("4bf92f35", "32 hexadecimal digits"),
        (TRACE + "00", "32 hexadecimal digits"),
        ("g" * 32, "32 hexadecimal digits"),
        ("0" * 32, "all zeros"),
        ("", "32 hexadecimal digits"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            parse_trace_id(bad)
