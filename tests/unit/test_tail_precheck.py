"""The live tail's check-all pre-checks (``collector.pipeline.tail_index``): whatever the batch
text holds — upper case, JSON escapes, characters whose lowercase is longer, needles sharing a
prefix with other subscribers' — a row a filter includes is always among its candidates."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from collector.domain.columns import EventColumns
from collector.domain.events import EPOCH, format_time
from collector.domain.filters import EventFilter, parse_filter
from collector.pipeline.tail_index import (
    KEY_OCCURRENCES_MAX,
    Batch,
    NeedlePlan,
    TailIndex,
    shared_prefix_groups,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)

# Label values and payload words: upper case, JSON escapes, "İ" (lowercases to two
# characters, so the batch text's offsets shift), the Kelvin sign (lowercases to ASCII "k"),
# Greek capital sigma (context-dependent lowercase) and needle look-alikes sharing prefixes.
WORDS = [
    "alpha",
    "ALPHA",
    "Needle7",
    "needle70",
    "needle8",
    "xNEEDLE9y",
    'quote"and\\slash',
    "tab\there",
    "İstanbul",
    "\u212aey",
    "ΟΔΟΣ",
    "a/b",
    "eu",
    "EU",
    "us",
]


def make_event(rng: random.Random, n: int) -> dict[str, Any]:
    labels = {"prefect.resource.id": f"app.svc.{rng.randrange(120)}"}
    for k in range(rng.randrange(3)):
        labels[f"label.{k}"] = rng.choice(WORDS)
    related = [
        {
            "prefect.resource.id": f"app.customer.{rng.randrange(90)}",
            "prefect.resource.role": rng.choice(["customer", "tenant", "Tenant"]),
        }
        for _ in range(rng.randrange(3))
    ]
    return {
        "event": f"app.{rng.choice(['checkout', 'Payments', 'ship'])}.{rng.choice(WORDS[:6])}",
        "occurred": format_time(NOW + timedelta(microseconds=n)),
        "resource": labels,
        "related": related,
        "payload": {"n": n, "word": rng.choice(WORDS)},
        "id": f"00000000-0000-7000-8000-{n:012d}",
    }


def columns(events: list[dict[str, Any]]) -> EventColumns:
    cols = EventColumns()
    for e in events:
        cols.append(
            e["id"],
            (datetime.fromisoformat(e["occurred"]) - EPOCH) // timedelta(microseconds=1),
            e["event"],
            e["resource"],
            e["related"],
            orjson.dumps(e["payload"]).decode(),
        )
    return cols


def random_filter(rng: random.Random) -> dict[str, Any]:
    word = rng.choice(WORDS)
    kinds: list[dict[str, Any]] = [
        {"related": {"id": [f"app.customer.{rng.randrange(100)}"]}},
        {"related": {"id": [f"app.customer.{rng.randrange(100)}"], "role": ["tenant"]}},
        {"any_resource": {"id": [f"app.customer.{rng.randrange(100)}"]}},
        {"any_resource": {"id_prefix": [f"app.customer.{rng.randrange(12)}"]}},
        {"resource": {"labels": {"label.0": word}}},
        {"resource": {"labels": {"label.1": [word, "eu*"]}}},
        {"any_resource": {"labels": {"label.0": word}}},
        {"text": {"query": word.lower()}},
        {"text": {"query": word.upper()}},
        {"text": {"query": f"needle{rng.randrange(12)}"}},
        {"text": {"query": f"+needle{rng.randrange(12)} +{rng.choice(['eu', 'alpha', 'n'])}"}},
        {"text": {"query": f"needle{rng.randrange(12)} kEY -alpha"}},
        {"text": {"query": f'"{word}" ship'}},
        {"event": {"exclude_prefix": ["app.ship"]}, "text": {"query": "needle7"}},
    ]
    return rng.choice(kinds)


def check(index: TailIndex[int], filters: list[EventFilter], events: list[dict[str, Any]]) -> None:
    candidates = {entry.sub: rows for entry, rows in index.candidates(columns(events)).items()}
    for k, f in enumerate(filters):
        wanted = [i for i, e in enumerate(events) if f.includes(e)]
        got = candidates.get(k, [])
        assert got == sorted(set(got)), f.to_json()  # ascending, each row once
        assert set(wanted) <= set(got), (f.to_json(), set(wanted) - set(got))


def test_candidates_hold_every_included_row_for_random_filters_and_batches() -> None:
    rng = random.Random(11)
    for _ in range(25):
        specs = [random_filter(rng) for _ in range(rng.randrange(1, 40))]
        filters = [parse_filter(s) for s in specs]
        index = TailIndex(list(enumerate(filters)))
        events = [make_event(rng, n) for n in range(rng.randrange(1, 120))]
        if rng.random() < 0.5:  # without "İ": the batch text keeps the rows' offsets
            for e in events:
                e["payload"]["word"] = e["payload"]["word"].replace("İ", "I")
                e["resource"] = {k: v.replace("İ", "I") for k, v in e["resource"].items()}
        check(index, filters, events)


def test_needle_only_in_one_rows_payload_in_upper_case_finds_that_row_only() -> None:
    rng = random.Random(3)
    events = [make_event(rng, n) for n in range(50)]
    for e in events:
        e["payload"] = {"n": 1}
        e["resource"] = {"prefect.resource.id": "app.svc.1"}
        e["event"] = "app.checkout.done"
    # The shared key "needle" (of needle40..49) occurs before the one needle that is there.
    events[3]["payload"] = {"note": "needles and NEEDLE4x"}
    events[31]["payload"] = {"note": "a NEEDLE42 in the HAYSTACK, needle42 again"}
    events[44]["resource"]["label.0"] = "Needle42"
    filters = [parse_filter({"text": {"query": f"needle{k}"}}) for k in range(40, 50)]
    index = TailIndex(list(enumerate(filters)))
    got = {entry.sub: rows for entry, rows in index.candidates(columns(events)).items()}
    assert got == {2: [31, 44]}


def test_characters_that_lowercase_longer_do_not_shift_the_rows_found() -> None:
    # "İ" lowercases to two characters: offsets into the raw rows no longer fit the lowered
    # batch text, so rows must still be found by their own text.
    rng = random.Random(5)
    events = [make_event(rng, n) for n in range(30)]
    for e in events:
        e["payload"] = {"w": "İİİİ"}
    events[20]["payload"] = {"w": "İİ needle5"}
    events[21]["payload"] = {"w": "needle5"}
    f = parse_filter({"text": {"query": "needle5"}})
    index = TailIndex([(0, f)])
    rows = next(iter(index.candidates(columns(events)).values()))
    assert [i for i in rows if f.includes(events[i])] == [20, 21]


def test_label_value_with_json_escapes_is_never_ruled_out() -> None:
    rng = random.Random(9)
    events = [make_event(rng, n) for n in range(40)]
    events[7]["resource"]["label.0"] = 'quote"and\\slash'
    events[8]["related"] = [{"prefect.resource.id": "app.x", "weird": 'quote"and\\slash'}]
    filters = [
        parse_filter({"resource": {"labels": {"label.0": 'quote"and\\slash'}}}),
        parse_filter({"any_resource": {"labels": {"weird": 'quote"and\\slash'}}}),
        parse_filter({"text": {"query": '"and\\\\slash"'}}),
    ]
    index = TailIndex(list(enumerate(filters)))
    check(index, filters, events)
    got = {entry.sub: rows for entry, rows in index.candidates(columns(events)).items()}
    assert 7 in got[0] and 8 in got[1]


def test_a_shared_prefix_present_in_many_rows_still_finds_each_needle() -> None:
    # "app.customer." is in every related column: the cluster key is too common, so each
    # needle is searched on its own — and one of them is there.
    events = [
        {
            "event": "app.a",
            "occurred": format_time(NOW),
            "resource": {"prefect.resource.id": f"app.svc.{n}"},
            "related": [{"prefect.resource.id": f"app.customer.{n}"}],
            "payload": {},
            "id": f"00000000-0000-7000-8000-{n:012d}",
        }
        for n in range(KEY_OCCURRENCES_MAX * 2)
    ]
    filters = [parse_filter({"related": {"id": [f"app.customer.x{k}"]}}) for k in range(5)]
    filters.append(parse_filter({"related": {"id": [f"app.customer.{KEY_OCCURRENCES_MAX + 3}"]}}))
    index = TailIndex(list(enumerate(filters)))
    got = {entry.sub: rows for entry, rows in index.candidates(columns(events)).items()}
    assert got == {5: [KEY_OCCURRENCES_MAX + 3]}


def test_shared_prefix_groups_cluster_by_the_longest_shared_prefix() -> None:
    assert shared_prefix_groups(["a.x.1", "a.x.2", "a.y.1", "a.y.2"]) == {
        "a.x.": ("a.x.1", "a.x.2"),
        "a.y.": ("a.y.1", "a.y.2"),
    }
    # Trailing digits are no shared prefix: needle1 / needle11 / needle2 share "needle".
    assert shared_prefix_groups(["needle1", "needle11", "needle2", "error", "timeout"]) == {
        "needle": ("needle1", "needle11", "needle2")
    }
    assert shared_prefix_groups(["abc1", "abd2", "x"]) == {}  # too short to pay for a search


def test_batch_presence_of_clustered_needles_matches_plain_search() -> None:
    rng = random.Random(2)
    events = [make_event(rng, n) for n in range(60)]
    needles = [f"needle{k}" for k in range(12)] + ["alpha", "nee", "xneedle9y"]
    plan = NeedlePlan({"lower": needles})
    batch = Batch(columns(events), plan)
    text = batch.joined("lower")
    for needle in needles:
        assert batch.has("lower", needle) == (needle in text), needle
        rows = batch.rows_with(needle)
        cols = batch.cols
        expected = [
            i
            for i, parts in enumerate(
                zip(cols.names, cols.resources, cols.related, cols.payloads, strict=True)
            )
            if needle in "\x00".join(parts).lower()
        ]
        assert rows == expected, needle
