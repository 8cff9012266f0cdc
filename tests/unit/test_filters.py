"""``EventFilter`` (P§4.1–4.4): every case runs through ``includes()`` — on the stored
``ReceivedEvent`` and on its Prefect JSON dict — and through ``filter_sql()`` against a real DuckDB
store. All three must give the expected events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import orjson
import pytest

from collector.domain.columns import EventColumns
from collector.domain.events import ReceivedEvent, datetime_to_us
from collector.domain.filters import EventFilter, parse_filter
from collector.domain.text_search import parse_text_query
from collector.errors import InvalidFilter
from collector.store.duckdb_store import EventStore, columns_to_arrow
from collector.store.filter_sql import filter_sql

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _id(n: int) -> str:
    return str(UUID(int=n))


# A small world: name → (minutes before NOW, event name, resource, related, payload).
WORLD: dict[str, tuple[float, str, dict[str, str], list[dict[str, str]], dict[str, Any]]] = {
    "order_shipped": (
        10,
        "app.order.shipped",
        {
            "prefect.resource.id": "app.order.8812",
            "prefect.resource.name": "Order 8812",
            "region": "eu",
            "path": "s3://bucket/object.csv",
        },
        [
            {"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"},
            {"prefect.resource.id": "prefect.tag.vip", "prefect.resource.role": "tag"},
        ],
        {"carrier": "DHL"},
    ),
    "order_created": (
        20,
        "app.order.created",
        {"prefect.resource.id": "app.order.8813", "region": "us"},
        [{"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}],
        {"carrier": "UPS", "note": "Fragile ÄÖ エラー"},
    ),
    "spider_completed": (
        30,
        "prefect.flow-run.Completed",
        {
            "prefect.resource.id": "prefect.flow-run.abc",
            "prefect.resource.name": "tidy-spider",
            "prefect.state-name": "Completed",
        },
        [
            {
                "prefect.resource.id": "prefect.flow.1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "etl",
            },
            {"prefect.resource.id": "prefect.deployment.9", "prefect.resource.role": "deployment"},
            {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"},
        ],
        {},
    ),
    "cat_failed": (
        40,
        "prefect.flow-run.Failed",
        {"prefect.resource.id": "prefect.flow-run.def", "prefect.resource.name": "lazy-cat"},
        [
            {
                "prefect.resource.id": "prefect.flow.2",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "report",
            },
            {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"},
        ],
        {"error": "Connection timeout after 30s"},
    ),
    "spider_log": (
        50,
        "prefect.log.write",
        {"prefect.resource.id": "prefect.flow-run.abc"},
        [],
        {"message": "debug: starting"},
    ),
    "odd_file": (
        60,
        "app.file.uploaded",
        {
            "prefect.resource.id": "app.file.1",
            "pct": "100%",
            "under": "a_b",
            "back": "c\\d",
            "glob": "x*y",
            "bracket": "[ab]",
            "$dollar": "1",
            "/slash": "2",
            'quo"te': "3",
            "back\\key": "4",
            "a.b": "5",
        },
        [
            {
                "prefect.resource.id": 'app.dir."quoted"',
                "prefect.resource.role": "parent",
                "name": "Ünïcode",
            }
        ],
        {},
    ),
    "checkout_error": (
        70,
        "otel.span.error",
        {
            "prefect.resource.id": "otel.service.checkout",
            "prefect.resource.name": "checkout",
            "service.name": "checkout",
        },
        [
            {
                "prefect.resource.id": "otel.span.aa",
                "prefect.resource.role": "span",
                "otel.trace_id": "t1",
            },
            {"prefect.resource.id": "otel.trace.t1", "prefect.resource.role": "trace"},
        ],
        {"status": "error"},
    ),
    # Older than the default look-back (start of today − 180 days) and newer than NOW.
    "ancient": (
        200 * 24 * 60,
        "app.order.shipped",
        {"prefect.resource.id": "app.order.1", "region": "eu"},
        [],
        {},
    ),
    "future": (-60, "app.order.shipped", {"prefect.resource.id": "app.order.2"}, [], {}),
}
NAMES = list(WORLD)
IDS = {name: _id(i + 1) for i, name in enumerate(NAMES)}
CURRENT = set(NAMES) - {"ancient", "future"}


def _occurred(name: str) -> datetime:
    return NOW - timedelta(minutes=WORLD[name][0])


WorldEvents = dict[str, tuple[float, str, dict[str, str], list[dict[str, str]], dict[str, Any]]]


@dataclass
class World:
    """A world, stored through the ingest path's Arrow insert (so labels are the JSON text
    ingest writes), and as ``ReceivedEvent`` objects; events are named by ``names``."""

    store: EventStore
    cur: duckdb.DuckDBPyConnection
    events: list[ReceivedEvent]
    names: dict[str, str]  # id → name

    def ids(self, flt: EventFilter) -> set[str]:
        where, params = filter_sql(flt)
        sql = f"SELECT e.id::VARCHAR FROM events e WHERE {where}"
        return {self.names[r[0]] for r in self.cur.execute(sql, params).fetchall()}

    def by_includes(self, flt: EventFilter) -> set[str]:
        return {self.names[str(e.id)] for e in self.events if flt.includes(e)}

    def by_dict_includes(self, flt: EventFilter) -> set[str]:
        return {self.names[str(e.id)] for e in self.events if flt.includes(e.to_dict())}

    def check(self, data: dict[str, Any], expected: set[str]) -> None:
        """The filter ``data`` selects ``expected`` on all three paths."""
        flt = parse_filter(data).resolve(NOW)
        assert self.by_includes(flt) == expected, "includes(ReceivedEvent)"
        assert self.by_dict_includes(flt) == expected, "includes(dict)"
        assert self.ids(flt) == expected, "filter_sql() on the store"


def _world(events_by_name: WorldEvents, path: Path) -> World:
    cols = EventColumns()
    events = []
    ids = {name: _id(i + 1) for i, name in enumerate(events_by_name)}
    for name, (minutes, event, resource, related, payload) in events_by_name.items():
        occurred = NOW - timedelta(minutes=minutes)
        payload_json = orjson.dumps(payload).decode()
        cols.append(ids[name], datetime_to_us(occurred), event, resource, related, payload_json)
        events.append(
            ReceivedEvent(
                id=UUID(ids[name]),
                occurred=occurred,
                received=NOW,
                event=event,
                resource=resource,
                related=related,
                payload=payload,
            )
        )
    store = EventStore(path)
    store.append(columns_to_arrow(cols, [datetime_to_us(NOW)] * len(cols)))
    return World(store, store.cursor(), events, {v: k for k, v in ids.items()})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = _world(WORLD, Path(tmp_path_factory.mktemp("filters")) / "t.duckdb")
    yield w
    w.cur.close()
    w.store.close()


CASES = [
    # occurred (P§4.1): defaults resolve to [start of today − 180 d, now], both inclusive.
    pytest.param({}, CURRENT, id="default-window"),
    pytest.param(
        {"occurred": {"since": "2020-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}},
        set(NAMES),
        id="wide-window",
    ),
    pytest.param(
        {
            "occurred": {
                "since": _occurred("cat_failed").isoformat(),
                "until": _occurred("order_created").isoformat(),
            }
        },
        {"order_created", "spider_completed", "cat_failed"},
        id="window-is-inclusive",
    ),
    pytest.param(
        {"occurred": {"since": "2026-11-24T11:15:00", "until": "2026-11-24T11:45:00"}},
        {"order_created", "spider_completed", "cat_failed"},
        id="naive-times-are-utc",
    ),
    # event names
    pytest.param(
        {"event": {"prefix": ["app.order."]}}, {"order_shipped", "order_created"}, id="prefix"
    ),
    pytest.param(
        {"event": {"prefix": ["app.order.s", "otel."]}},
        {"order_shipped", "checkout_error"},
        id="prefixes-or",
    ),
    pytest.param(
        {"event": {"name": ["prefect.flow-run.Failed", "app.file.uploaded"]}},
        {"cat_failed", "odd_file"},
        id="names-or",
    ),
    pytest.param({"event": {"name": ["prefect.flow-run"]}}, set(), id="name-is-exact"),
    pytest.param(
        {"event": {"exclude_prefix": ["prefect.", "app."]}}, {"checkout_error"}, id="exclude-prefix"
    ),
    pytest.param(
        {"event": {"exclude_name": ["prefect.log.write"]}},
        CURRENT - {"spider_log"},
        id="exclude-name",
    ),
    pytest.param(
        {"event": {"prefix": ["prefect."], "exclude_name": ["prefect.log.write"]}},
        {"spider_completed", "cat_failed"},
        id="criteria-are-and",
    ),
    pytest.param({"event": {"prefix": []}}, CURRENT, id="empty-prefix-list-is-no-constraint"),
    # resource id / prefix
    pytest.param(
        {"resource": {"id": ["prefect.flow-run.abc"]}},
        {"spider_completed", "spider_log"},
        id="resource-id",
    ),
    pytest.param(
        {"resource": {"id_prefix": ["app.order.", "app.file"]}},
        {"order_shipped", "order_created", "odd_file"},
        id="resource-id-prefix",
    ),
    # resource labels (P§4.2)
    pytest.param({"resource": {"labels": {"region": "eu"}}}, {"order_shipped"}, id="label"),
    pytest.param(
        {"resource": {"labels": {"region": ["eu", "us"]}}},
        {"order_shipped", "order_created"},
        id="label-list-or",
    ),
    pytest.param(
        {"resource": {"labels": {"region": "!eu"}}},
        {"order_created"},
        id="negated-label-needs-the-label",
    ),
    pytest.param(
        {"resource": {"labels": {"region": "!nah"}}},
        {"order_shipped", "order_created"},
        id="negated-literal",
    ),
    pytest.param({"resource": {"labels": {"region": []}}}, set(), id="empty-value-list"),
    pytest.param({"resource": {"labels": {}}}, CURRENT, id="empty-spec-is-no-constraint"),
    pytest.param(
        {"resource": {"labels": {"region": ["us", "!eu", "xx"]}}},
        {"order_created"},
        id="mixed-list",
    ),
    pytest.param({"resource": {"labels": {"path": "*.csv"}}}, {"order_shipped"}, id="leading-glob"),
    pytest.param(
        {"resource": {"labels": {"path": "s3://*.csv"}}}, {"order_shipped"}, id="middle-glob"
    ),
    pytest.param(
        {"resource": {"labels": {"prefect.resource.name": "?idy-sp*er"}}},
        {"spider_completed"},
        id="question-mark-and-star",
    ),
    pytest.param(
        {"resource": {"labels": {"prefect.resource.id": "app.order.*"}}},
        {"order_shipped", "order_created"},
        id="resource-id-label-glob",
    ),
    pytest.param(
        {"resource": {"labels": {"prefect.resource.id": "!app.*"}}},
        CURRENT - {"order_shipped", "order_created", "odd_file"},
        id="resource-id-label-negated",
    ),
    pytest.param(
        {"resource": {"labels": {"region": "eu", "prefect.resource.name": "Order*"}}},
        {"order_shipped"},
        id="labels-and",
    ),
    pytest.param(
        {"resource": {"labels": {"region": "eu", "prefect.resource.name": "x*"}}},
        set(),
        id="labels-and-one-fails",
    ),
    pytest.param({"resource": {"labels": {"pct": "100%"}}}, {"odd_file"}, id="percent-literal"),
    pytest.param({"resource": {"labels": {"pct": "10%"}}}, set(), id="percent-not-wildcard"),
    pytest.param({"resource": {"labels": {"under": "a_b"}}}, {"odd_file"}, id="underscore-literal"),
    pytest.param({"resource": {"labels": {"under": "axb"}}}, set(), id="underscore-not-wildcard"),
    pytest.param(
        {"resource": {"labels": {"under": "a?b"}}},
        {"odd_file"},
        id="question-mark-matches-underscore",
    ),
    pytest.param({"resource": {"labels": {"back": "c\\d"}}}, {"odd_file"}, id="backslash-literal"),
    pytest.param(
        {"resource": {"labels": {"back": "c\\*"}}}, {"odd_file"}, id="backslash-then-glob"
    ),
    pytest.param({"resource": {"labels": {"glob": "x*y"}}}, {"odd_file"}, id="star-in-value"),
    pytest.param(
        {"resource": {"labels": {"bracket": "[ab]"}}}, {"odd_file"}, id="brackets-literal"
    ),
    pytest.param({"resource": {"labels": {"bracket": "[a]*"}}}, set(), id="brackets-not-a-class"),
    pytest.param(
        {"resource": {"labels": {"it's": "x' OR 1=1 --"}}}, set(), id="quotes-are-parameters"
    ),
    pytest.param(
        {
            "resource": {
                "labels": {
                    "$dollar": "1",
                    "/slash": "2",
                    'quo"te': "3",
                    "back\\key": "4",
                    "a.b": "5",
                }
            }
        },
        {"odd_file"},
        id="keys-are-literal-not-paths",
    ),
    pytest.param({"resource": {"labels": {"a": "*"}}}, set(), id="dotted-key-is-not-nested"),
    # related (P§4.3): one related resource satisfies every criterion of one filter
    pytest.param(
        {"related": {"role": ["flow"]}}, {"spider_completed", "cat_failed"}, id="related-role"
    ),
    pytest.param(
        {"related": {"id": ["app.customer.17"]}},
        {"order_shipped", "order_created"},
        id="related-id",
    ),
    pytest.param(
        {"related": {"id": ["prefect.flow-run.abc"]}}, set(), id="related-excludes-primary"
    ),
    pytest.param(
        {
            "related": {
                "resources_in_roles": [["prefect.tag.nightly", "tag"], ["app.customer.17", "nope"]]
            }
        },
        {"spider_completed", "cat_failed"},
        id="resources-in-roles",
    ),
    pytest.param(
        {"related": {"role": ["tag"], "id": ["prefect.flow.1"]}},
        set(),
        id="same-resource-must-match-all",
    ),
    pytest.param(
        {"related": {"labels": {"prefect.resource.role": "flow", "prefect.resource.name": "etl"}}},
        {"spider_completed"},
        id="related-labels",
    ),
    pytest.param(
        {"related": {"labels": {"prefect.resource.role": "!tag"}}},
        {
            "order_shipped",
            "order_created",
            "spider_completed",
            "cat_failed",
            "odd_file",
            "checkout_error",
        },
        id="related-negated-role",
    ),
    pytest.param(
        {"related": {"labels": {"otel.trace_id": "t?"}}},
        {"checkout_error"},
        id="related-label-glob",
    ),
    pytest.param(
        {"related": {"id": ['app.dir."quoted"']}}, {"odd_file"}, id="related-id-with-quotes"
    ),
    pytest.param(
        {"related": {"labels": {"name": "Ünïcode"}}}, {"odd_file"}, id="related-non-ascii-value"
    ),
    pytest.param(
        {"related": {"labels": {"name": ["Ünï*", "nope"]}}},
        {"odd_file"},
        id="related-non-ascii-prefix",
    ),
    pytest.param(
        {"related": {"id": ["app.customer.17", "prefect.flow.2"], "role": ["flow"]}},
        {"cat_failed"},
        id="related-id-list-and-role",
    ),
    pytest.param(
        {"related": [{"role": ["flow"]}, {"id": ["prefect.tag.nightly"]}]},
        {"spider_completed", "cat_failed"},
        id="related-list-is-and",
    ),
    pytest.param(
        {"related": [{"role": ["flow"]}, {"id": ["prefect.tag.vip"]}]},
        set(),
        id="related-list-all-must-hold",
    ),
    pytest.param({"related": {}}, CURRENT, id="empty-related-is-no-constraint"),
    pytest.param({"related": {"labels": {}}}, CURRENT, id="related-empty-labels"),
    pytest.param({"related": {"labels": {"x": []}}}, set(), id="related-empty-value-list"),
    pytest.param(
        {"resource": {"id": ["prefect.flow-run.abc"]}, "related": {}},
        {"spider_completed", "spider_log"},
        id="noop-related-does-not-interfere",
    ),
    # any_resource: primary or any related
    pytest.param(
        {"any_resource": {"id": ["prefect.flow-run.abc"]}},
        {"spider_completed", "spider_log"},
        id="any-primary",
    ),
    pytest.param(
        {"any_resource": {"id": ["prefect.flow.1"]}}, {"spider_completed"}, id="any-related"
    ),
    pytest.param(
        {"any_resource": {"id_prefix": ["prefect.tag."]}},
        {"order_shipped", "spider_completed", "cat_failed"},
        id="any-id-prefix",
    ),
    pytest.param(
        {"any_resource": {"labels": {"prefect.resource.role": "flow"}}},
        {"spider_completed", "cat_failed"},
        id="any-role-label",
    ),
    pytest.param(
        {"any_resource": {"labels": {"region": "eu"}}}, {"order_shipped"}, id="any-primary-label"
    ),
    pytest.param(
        {
            "any_resource": {
                "id_prefix": ["prefect.flow"],
                "labels": {"prefect.resource.name": "report"},
            }
        },
        {"cat_failed"},
        id="any-one-resource-all-criteria",
    ),
    pytest.param(
        {"any_resource": [{"id_prefix": ["prefect.flow-run."]}, {"id_prefix": ["prefect.tag."]}]},
        {"spider_completed", "cat_failed"},
        id="any-list-is-and",
    ),
    pytest.param(
        {"any_resource": {"id_prefix": ["app.dir."]}}, {"odd_file"}, id="any-related-id-prefix"
    ),
    pytest.param(
        {"any_resource": {"labels": {"prefect.resource.role": "parent", "name": "Ünïcode"}}},
        {"odd_file"},
        id="any-related-labels",
    ),
    pytest.param({"any_resource": {}}, CURRENT, id="empty-any-is-no-constraint"),
    pytest.param({"any_resource": {"labels": {"region": []}}}, set(), id="any-empty-value-list"),
    # ids
    pytest.param(
        {"id": {"id": [IDS["odd_file"], IDS["cat_failed"], _id(999)]}},
        {"odd_file", "cat_failed"},
        id="ids",
    ),
    pytest.param({"id": {"id": []}}, CURRENT, id="empty-id-list"),
    # text (P§4.4)
    pytest.param({"text": {"query": "DHL"}}, {"order_shipped"}, id="text-term"),
    pytest.param(
        {"text": {"query": "dhl ups"}},
        {"order_shipped", "order_created"},
        id="text-or-case-insensitive",
    ),
    pytest.param({"text": {"query": '"connection timeout"'}}, {"cat_failed"}, id="text-phrase"),
    pytest.param({"text": {"query": '"timeout connection"'}}, set(), id="text-phrase-order"),
    pytest.param({"text": {"query": "order -created"}}, {"order_shipped"}, id="text-exclude"),
    pytest.param(
        {"text": {"query": "!debug"}}, CURRENT - {"spider_log"}, id="text-bang-exclude-only"
    ),
    pytest.param(
        {"text": {"query": '-"connection timeout"'}},
        CURRENT - {"cat_failed"},
        id="text-exclude-phrase",
    ),
    pytest.param({"text": {"query": "+nightly +failed"}}, {"cat_failed"}, id="text-required"),
    pytest.param({"text": {"query": "エラー"}}, {"order_created"}, id="text-unicode"),
    pytest.param({"text": {"query": "fragile äö"}}, {"order_created"}, id="text-unicode-case"),
    pytest.param({"text": {"query": "checkout"}}, {"checkout_error"}, id="text-label-value"),
    pytest.param({"text": {"query": "etl"}}, {"spider_completed"}, id="text-related-value"),
    pytest.param({"text": {"query": "ÜNÏCODE"}}, {"odd_file"}, id="text-related-unicode"),
    pytest.param(
        {"text": {"query": "carrier"}},
        {"order_shipped", "order_created"},
        id="text-payload-keys-searched",
    ),
    pytest.param({"text": {"query": "state-name"}}, set(), id="text-label-keys-not-searched"),
    pytest.param(
        {"text": {"query": "spider completed"}}, {"spider_completed"}, id="text-terms-across-fields"
    ),
    pytest.param({"text": {"query": "nonexistent"}}, set(), id="text-no-match"),
    pytest.param({"text": {"query": ""}}, CURRENT, id="text-empty"),
    pytest.param({"text": {"query": "   - "}}, CURRENT, id="text-whitespace-and-lone-prefix"),
    pytest.param({"text": {"query": "100%"}}, {"odd_file"}, id="text-percent-literal"),
    # everything together
    pytest.param(
        {
            "event": {"prefix": ["prefect.flow-run."]},
            "resource": {"labels": {"prefect.resource.name": ["tidy-*", "lazy-*"]}},
            "related": {"role": ["tag"], "id": ["prefect.tag.nightly"]},
            "any_resource": {"id": ["prefect.flow.2"]},
            "text": {"query": "timeout"},
            "order": "ASC",
        },
        {"cat_failed"},
        id="all-parts-and",
    ),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_filter_cases_agree_in_memory_and_in_sql(
    world: World, data: dict[str, Any], expected: set[str]
) -> None:
    world.check(data, expected)


# Values that stress the tests on raw JSON text (label members, text pre-checks): they must
# neither hide a match nor invent one. Kelvin sign K lowercases to an ASCII "k"; quotes and
# backslashes are escaped in the stored JSON text.
ESCAPES: WorldEvents = {
    "kelvin": (
        1,
        "app.sensor.read",
        {"prefect.resource.id": "app.sensor.1", "unit": "\u212aelvin", "region": "eu"},
        [],
        {"reading": 3},
    ),
    "quoted": (
        2,
        "app.note.added",
        {"prefect.resource.id": "app.note.1", "region": "eu west"},
        [
            {
                "prefect.resource.id": "app.user.1",
                "prefect.resource.role": "author",
                "says": 'say "hi" now',
            }
        ],
        {"text": 'back\\slash "quoted"'},
    ),
    # Near misses of the member texts `{"region":"eu"` / `,"region":"eu"`.
    "tricky": (
        3,
        "app.tricky.made",
        {
            "region": "eu",
            "prefect.resource.id": "app.tricky.1",
            'my"region': "us",
            "note": 'a,"region":"us"',
            "xregion": "us",
        },
        [],
        {},
    ),
    "europe": (
        4,
        "app.tricky.made",
        {
            "prefect.resource.id": "app.tricky.2",
            "region": "europe",
            'my"region': "eu",
            "note": ',"region":"eu"',
            "xregion": "eu",
        },
        [],
        {},
    ),
}


@pytest.fixture(scope="module")
def escapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = _world(ESCAPES, Path(tmp_path_factory.mktemp("escapes")) / "t.duckdb")
    yield w
    w.cur.close()
    w.store.close()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"text": {"query": "kelvin"}}, {"kelvin"}, id="text-unicode-lowercase"),
        pytest.param({"text": {"query": "KELVIN"}}, {"kelvin"}, id="text-upper-term"),
        pytest.param(
            {"text": {"query": "-kelvin"}}, {"quoted", "tricky", "europe"}, id="text-exclude"
        ),
        pytest.param({"text": {"query": "+hi"}}, {"quoted"}, id="text-inside-escaped-quotes"),
        pytest.param({"text": {"query": "slash"}}, {"quoted"}, id="text-after-backslash"),
        # The payload is searched as JSON text, where the backslash is escaped.
        pytest.param({"text": {"query": "k\\\\slash"}}, {"quoted"}, id="text-escaped-backslash"),
        pytest.param({"text": {"query": '"say \\"hi\\" now"'}}, {"quoted"}, id="text-quote-phrase"),
        pytest.param({"text": {"query": '"eu west"'}}, {"quoted"}, id="text-phrase-with-space"),
        pytest.param({"text": {"query": "unit"}}, set(), id="text-keys-not-searched"),
        pytest.param(
            {"resource": {"labels": {"unit": "\u212aelvin"}}}, {"kelvin"}, id="label-non-ascii"
        ),
        pytest.param({"resource": {"labels": {"unit": "*elvin"}}}, {"kelvin"}, id="label-glob"),
        pytest.param(
            {"resource": {"labels": {"region": "eu"}}}, {"kelvin", "tricky"}, id="label-exact"
        ),
        pytest.param(
            {"resource": {"labels": {"region": "eu*"}}},
            {"kelvin", "quoted", "tricky", "europe"},
            id="label-prefix",
        ),
        pytest.param({"resource": {"labels": {"region": "us"}}}, set(), id="label-near-misses"),
        pytest.param(
            {"resource": {"labels": {"region": ["us", "europe"]}}}, {"europe"}, id="label-list"
        ),
        pytest.param({"resource": {"labels": {"xregion": "eu"}}}, {"europe"}, id="label-suffix"),
        pytest.param({"resource": {"labels": {'my"region': "eu"}}}, {"europe"}, id="label-quote"),
        pytest.param(
            {"resource": {"labels": {"region": "eu", "xregion": "us"}}}, {"tricky"}, id="labels"
        ),
        pytest.param(
            {"any_resource": {"labels": {"region": "eu"}}}, {"kelvin", "tricky"}, id="any"
        ),
        pytest.param(
            {"related": {"labels": {"says": 'say "hi" now'}}}, {"quoted"}, id="related-quotes"
        ),
        pytest.param(
            {"any_resource": {"labels": {"says": "say*"}}}, {"quoted"}, id="any-related-prefix"
        ),
    ],
)
def test_raw_text_tests_are_exact(escapes: World, data: dict[str, Any], expected: set[str]) -> None:
    escapes.check(data, expected)


def test_stored_labels_are_compact_json(world: World) -> None:
    # The substring pre-checks look for `"key":"value"`: they rely on this form.
    row = world.cur.execute(
        "SELECT resource::VARCHAR FROM events WHERE id = ?::UUID", [IDS["order_shipped"]]
    ).fetchone()
    assert row is not None
    assert '"region":"eu"' in row[0]


def _hints(data: dict[str, Any]) -> list[str]:
    """The member texts the SQL looks for in the raw label JSON."""
    _, params = filter_sql(parse_filter(data))
    return [p for p in params if isinstance(p, str) and '":"' in p]


@pytest.mark.parametrize(
    ("labels", "hints"),
    [
        pytest.param({"region": "eu"}, ['{"region":"eu"', ',"region":"eu"'], id="value"),
        pytest.param({"region": "eu*"}, ['{"region":"eu', ',"region":"eu'], id="prefix"),
        pytest.param(
            {"region": ["eu", "us"]},
            ['{"region":"eu"', ',"region":"eu"', '{"region":"us"', ',"region":"us"'],
            id="list",
        ),
        pytest.param({"region": ["eu", "!us"]}, [], id="negation-in-list"),
        pytest.param({"region": "*eu"}, [], id="leading-glob"),
        pytest.param({"region": "e?"}, [], id="question-mark"),
        pytest.param({"region": "*"}, [], id="star"),
        pytest.param({'quo"te': "3"}, [], id="escaped-key"),
        pytest.param({"path": "a/b"}, [], id="slash-may-be-escaped"),
        pytest.param({"name": "Ünï"}, [], id="non-ascii-may-be-escaped"),
        pytest.param({"prefect.resource.id": "app.x"}, [], id="resource-id-uses-its-column"),
    ],
)
def test_resource_label_member_texts(labels: dict[str, Any], hints: list[str]) -> None:
    assert _hints({"resource": {"labels": labels}}) == hints


def test_related_hints_put_the_role_last() -> None:
    # Related labels are read from the JSON (ids and roles alone go through herald_related).
    related = {"role": ["tenant"], "id": ["app.tenant.7"], "labels": {"tier": "gold"}}
    assert _hints({"related": related}) == [
        '"prefect.resource.id":"app.tenant.7"',
        '"tier":"gold"',
        '"prefect.resource.role":"tenant"',
    ]


def test_unresolved_window_is_unbounded(world: World) -> None:
    flt = parse_filter({"event": {"prefix": ["app.order."]}})
    expected = {"order_shipped", "order_created", "ancient", "future"}
    assert world.by_includes(flt) == expected
    assert world.ids(flt) == expected


def test_defaults_are_prefects() -> None:
    flt = EventFilter().resolve(datetime(2026, 11, 24, 15, 30, 5, tzinfo=UTC))
    assert flt.occurred.since == datetime(2026, 5, 28, tzinfo=UTC)  # 180 days before midnight
    assert flt.occurred.until == datetime(2026, 11, 24, 15, 30, 5, tzinfo=UTC)
    assert flt.order == "DESC"


def test_resolve_keeps_explicit_times() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    flt = parse_filter({"occurred": {"since": since.isoformat()}}).resolve(NOW)
    assert flt.occurred.since == since
    assert flt.occurred.until == NOW


def test_accepts_prefect_json_as_is() -> None:
    data = {
        "occurred": {"since": "2026-11-23T00:00:00.000000Z", "until": "2026-11-24T00:00:00Z"},
        "event": {"prefix": ["prefect.flow-run."], "exclude_name": ["prefect.log.write"]},
        "resource": {"labels": {"prefect.resource.id": ["prefect.flow-run.*"]}, "distinct": True},
        "related": [{"role": ["flow"]}],
        "any_resource": {"id_prefix": ["prefect.deployment."]},
        "id": {"id": [_id(1)]},
        "text": {"query": "error"},
        "order": "ASC",
    }
    flt = parse_filter(data)
    assert flt.distinct
    assert parse_filter(flt.to_json()) == flt
    assert parse_filter(orjson.dumps(data)) == flt


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"evnt": {}}, "filter.evnt: unknown field", id="unknown-top-level"),
        pytest.param(
            {"event": {"prefixes": ["a"]}},
            "filter.event.prefixes: unknown field",
            id="unknown-nested",
        ),
        pytest.param({"text": {"query": "x" * 201}}, "filter.text.query", id="text-too-long"),
        pytest.param({"id": {"id": ["not-a-uuid"]}}, "filter.id.id.0", id="bad-uuid"),
        pytest.param({"order": "SIDEWAYS"}, "filter.order", id="bad-order"),
        pytest.param(
            {"resource": {"labels": {"k": 1}}}, "filter.resource.labels.k", id="non-string-label"
        ),
    ],
)
def test_invalid_filters_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilter, match=message.replace(".", r"\.")):
        parse_filter(data)


def test_order_is_case_insensitive() -> None:
    assert parse_filter({"order": "asc"}).order == "ASC"


def test_sql_never_contains_user_values() -> None:
    evil = "x'); DROP TABLE events; --"
    flt = parse_filter(
        {
            "event": {"prefix": [evil], "name": [evil]},
            "resource": {"id": [evil], "labels": {evil: [evil, "!" + evil, evil + "*"]}},
            "related": {"role": [evil], "labels": {evil: evil}},
            "any_resource": {"id_prefix": [evil]},
            "text": {"query": evil},
        }
    )
    sql, params = filter_sql(flt)
    assert "DROP" not in sql
    assert sql.count("?") == len(params)


def test_empty_filter_compiles_to_true() -> None:
    assert filter_sql(EventFilter()) == ("TRUE", [])


@pytest.mark.parametrize(
    ("query", "include", "exclude", "required"),
    [
        pytest.param("error", ["error"], [], [], id="term"),
        pytest.param("error warn", ["error", "warn"], [], [], id="terms-or"),
        pytest.param("error -debug !trace", ["error"], ["debug", "trace"], [], id="excludes"),
        pytest.param("+a +b", [], [], ["a", "b"], id="required"),
        pytest.param('"connection timeout"', ["connection timeout"], [], [], id="phrase"),
        pytest.param('-"a b" +"c d"', [], ["a b"], ["c d"], id="prefixed-phrases"),
        pytest.param('"say \\"hi\\""', ['say "hi"'], [], [], id="escaped-quote"),
        pytest.param('"a\\\\b"', ["a\\b"], [], [], id="escaped-backslash"),
        pytest.param('"a\\nb"', ["a\\nb"], [], [], id="other-backslash-kept"),
        pytest.param("a\\b", ["a\\b"], [], [], id="backslash-outside-quotes"),
        pytest.param("- x + y !", ["x", "y"], [], [], id="prefix-then-space-ignored"),
        pytest.param('abc"def"', ["abc", "def"], [], [], id="quote-ends-a-term"),
        pytest.param('"unclosed phrase', ["unclosed phrase"], [], [], id="unclosed-phrase"),
        pytest.param('"" "  "', [], [], [], id="empty-phrases"),
        pytest.param("+-x", [], [], ["-x"], id="only-first-prefix-counts"),
        pytest.param("   ", [], [], [], id="whitespace"),
    ],
)
def test_text_query_parser(
    query: str, include: list[str], exclude: list[str], required: list[str]
) -> None:
    parsed = parse_text_query(query)
    assert (list(parsed.include), list(parsed.exclude), list(parsed.required)) == (
        include,
        exclude,
        required,
    )
