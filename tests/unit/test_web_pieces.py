"""The web UI's pure parts: the feed URL ↔ filter, the histogram's geometry, JSON as escaped
HTML, Prefect's default trigger for "Automate", and the package data a wheel must carry."""

from __future__ import annotations

import fnmatch
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from multidict import MultiDict

from collector.domain.feed import EventCount
from collector.domain.filters import parse_filter
from collector.errors import InvalidFilter
from collector.web.automate_page import default_trigger
from collector.web.feed_query import FeedQuery, bucket_seconds
from collector.web.formatting import event_label, json_html, relative
from collector.web.histogram import HEIGHT, WIDTH, build_histogram

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_the_url_carries_every_filter_and_round_trips() -> None:
    query = FeedQuery.parse(
        MultiDict(
            [
                ("range", "1h"),
                ("event", "prefect.flow-run.*, prefect.task-run.*"),
                ("resource", "prefect.flow-run.abc"),
                ("label", "team=blue"),
                ("label", "env=prod*"),
                ("related", "prefect.flow.*"),
                ("role", "flow"),
                ("q", "error -debug"),
            ]
        )
    )
    data = query.to_filter(NOW)
    assert data["occurred"]["since"] == (NOW - timedelta(hours=1)).isoformat()
    assert data["event"] == {"prefix": ["prefect.flow-run.", "prefect.task-run."]}
    assert data["resource"] == {
        "id": ["prefect.flow-run.abc"],
        "labels": {"team": ["blue"], "env": ["prod*"]},
    }
    assert data["related"] == {
        "labels": {"prefect.resource.id": "prefect.flow.*"},
        "role": ["flow"],
    }
    assert data["text"] == {"query": "error -debug"}
    parse_filter(data)  # a valid EventFilter
    again = FeedQuery.parse(MultiDict(_pairs(query.url())))
    assert again == query
    # A changed filter starts from the first page; live drops the time bounds.
    paged = FeedQuery.parse(MultiDict(_pairs(query.url(page="tok"))))
    assert paged.page == "tok" and "page" not in paged.url(event="x")
    assert query.to_filter(NOW, live=True)["occurred"] == {"since": None, "until": None}


def _pairs(url: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    return parse_qsl(urlsplit(url).query)


def test_custom_ranges_and_bad_input() -> None:
    query = FeedQuery.parse({"since": "2026-12-01T00:00:00", "until": "2026-12-02T00:00:00Z"})
    assert query.custom and query.window(NOW) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2026, 12, 2, tzinfo=UTC),
    )
    for bad in (
        {"range": "2y"},
        {"since": "soon"},
        {"since": "2026-12-02T00:00:00", "until": "2026-12-01T00:00:00"},
        {"event": "a*b"},
        {"event": "a.*, b"},
        {"label": "novalue"},
    ):
        with pytest.raises(InvalidFilter):
            FeedQuery.parse(MultiDict(bad)).to_filter(NOW)


def test_histogram_bars_fit_the_range_and_link_to_their_bucket() -> None:
    since, until = NOW - timedelta(hours=1), NOW
    step = bucket_seconds(since, until)
    assert step == 60  # 60 one-minute bars, not 3,600 one-second ones
    counts = [
        EventCount("", "", n, since + timedelta(minutes=i), since + timedelta(minutes=i + 1))
        for i, n in enumerate([0, 5, 10] + [1] * 57)
    ]
    hist = build_histogram(counts, since, until, lambda a, b: f"{a:%H%M}-{b:%H%M}")
    assert len(hist.bars) == 59 and hist.total == 72 and hist.max_count == 10
    tallest = max(hist.bars, key=lambda b: b.height)
    assert tallest.count == 10 and tallest.y == pytest.approx(4.0)
    assert all(0 <= b.x and b.x + b.width <= WIDTH and b.y + b.height <= HEIGHT for b in hist.bars)
    assert hist.bars[0].href == "1101-1102"  # the empty first bucket has no bar


def test_json_html_escapes_every_key_and_value() -> None:
    html = str(json_html({"<k>": ["</script><script>x()</script>", 1, None, True], "n": {}}))
    assert "<script>" not in html and "&lt;/script&gt;" in html and "&lt;k&gt;" in html
    assert html.count("<details") == 2  # the object and the list fold; {} does not


def test_labels_and_times() -> None:
    assert event_label("prefect.flow-run.Completed") == "Flow Run Completed"
    assert event_label("my_app.order-placed") == "My App Order Placed"
    assert relative(NOW - timedelta(seconds=90), NOW) == "1 min ago"
    assert relative(NOW + timedelta(hours=2), NOW) == "in 2 h"


def test_default_trigger_is_prefects() -> None:
    plain = {"event": "shop.order.placed", "resource": {"prefect.resource.id": "shop.order.1"}}
    assert default_trigger(plain) == {
        "type": "event",
        "posture": "Reactive",
        "match": {"prefect.resource.id": "shop.order.1"},
        "match_related": {},
        "after": [],
        "expect": ["shop.order.placed"],
        "for_each": [],
        "threshold": 1,
        "within": 0,
    }
    flow_run = {
        "event": "prefect.flow-run.Failed",
        "resource": {"prefect.resource.id": "prefect.flow-run.1"},
        "related": [{"prefect.resource.id": "prefect.flow.9", "prefect.resource.role": "flow"}],
    }
    trigger = default_trigger(flow_run)
    assert trigger["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger["match_related"] == {
        "prefect.resource.role": "flow",
        "prefect.resource.id": "prefect.flow.9",
    }
    assert trigger["for_each"] == ["prefect.resource.id"]


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    """A non-editable install serves the pages only if pyproject's package-data names them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["collector.web"]
    web = ROOT / "collector" / "web"
    files = [
        str(p.relative_to(web))
        for p in web.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"
