"""benchmarks/cost_growth.py's report on made-up numbers: the markdown tables and the PNG plots
(no servers, no timing). matplotlib comes with the ``bench`` extra (in ``dev``); the script
imports it only to draw, so importing the module must not load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cost_growth import (
    AppendPoint,
    IngestPoint,
    QueryPoint,
    Results,
    load_results,
    plot,
    save_results,
    tables,
)

ROOT = Path(__file__).resolve().parents[2]


def _point(clients: int, batch: int, store: int, per_second: float, stored: int) -> IngestPoint:
    return IngestPoint(
        clients=clients,
        batch=batch,
        store_events=store,
        per_second=per_second,
        p50_ms=40.0,
        p99_ms=180.0,
        busy=0,
        cpu_us_per_event=21.5,
        max_rss_mb=300.0,
        acked=100_000,
        stored_new=stored,
        exit_code=0,
    )


def _results() -> Results:
    return Results(
        clients=[_point(c, 1000, 0, 10_000.0 * c, 100_000) for c in (1, 2, 4, 8)],
        batches=[_point(4, b, 0, 30.0 * b, 100_000) for b in (10, 100, 1000)],
        stores=[
            (_point(4, 1000, 0, 40_000.0, 100_000), _point(4, 1000, 100_000, 40_000.0, 100_000)),
            (
                _point(4, 1000, 0, 41_000.0, 100_000),
                _point(4, 1000, 10_000_000, 20_500.0, 99_999),  # one event lost
            ),
        ],
        appends=[
            AppendPoint(100_000, 30, 4000, 10.0, 10.0, 12.0, 12.0),
            AppendPoint(10_000_000, 30, 4000, 11.0, 10.0, 15.0, 12.0),
        ],
        queries=[
            QueryPoint(s, n, ms * n / 100_000, ms * n / 50_000, 15)
            for s, ms in (("feed page", 2.0), ("text page", 5.0))
            for n in (100_000, 1_000_000, 10_000_000)
        ],
        title_note="(load avg 0.5 at start, 2.0 max)",
    )


def test_tables_show_every_point_and_flag_a_lost_event() -> None:
    text = tables(_results())

    assert "| 8 | 80,000 | 40 / 180 ms | 21.5 µs | 300 MB | 0 | yes |" in text
    assert "| 10 | 300 |" in text and "| 1000 | 30,000 |" in text
    assert (
        "| 100k | 40,000 | 40,000 | 1.00 | 21.5 µs (21.5 µs) | 40 / 180 ms | 300 MB | yes |" in text
    )
    assert "| 10M | 20,500 | 41,000 | 0.50 |" in text and "**no** (100,000 / 99,999)" in text
    assert "| 10M | 11.0 µs | 10.0 µs | 1.10 | 15.0 µs | 12.0 µs | 1.25 | 30 |" in text
    assert "| scenario (p50 ms) | 100k | 1M | 10M |" in text
    assert "| text page | 5.0 | 50.0 | 500.0 |" in text
    assert not _results().stores[1][1].ok and _results().stores[1][0].ok


def test_saved_results_load_back_unchanged(tmp_path: Path) -> None:
    save_results(_results(), tmp_path / "cost-growth.json")

    assert load_results(tmp_path / "cost-growth.json") == _results()


def test_plots_are_small_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    written = plot(_results(), tmp_path / "img")

    assert [p.name for p in written] == [
        "cost-growth-clients.png",
        "cost-growth-batch.png",
        "cost-growth-store.png",
        "cost-growth-query.png",
    ]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert 5_000 < len(data) < 200_000, (path.name, len(data))


def test_importing_the_benchmark_does_not_load_matplotlib() -> None:
    code = "import sys, benchmarks.cost_growth; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
