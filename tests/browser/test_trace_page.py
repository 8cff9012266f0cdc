"""The trace page in a real browser (headless Chromium): a trace exported by the real OTel SDK
to a real ``herald serve``, reached from one of its events' page, shows its span tree with
service, duration and status, and its span events and logs inline; no console errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from collector.testing import ServedProcess, ports_zero, serve_process
from tests.browser.browser_support import chromium, console_errors, screenshot, wait_until
from tests.otel_trace_sample import SampleTrace, export_sample_trace

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedProcess, SampleTrace]]:
    db = tmp_path_factory.mktemp("trace-page") / "herald.duckdb"
    with serve_process(*ports_zero(db)) as server:
        yield server, export_sample_trace(server.grpc)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def test_trace_page_from_an_event(
    served: tuple[ServedProcess, SampleTrace], browser: WebDriver, tmp_path: Path
) -> None:
    server, sample = served
    base = f"http://{server.http}"
    trace = httpx.get(f"{base}/api/traces/{sample.trace_id}", timeout=10).json()
    charge = next(s for s in trace["spans"] if s["name"] == "charge card")
    console_errors(browser)

    # From the failed span's event page, its trace link leads to the trace.
    browser.get(f"{base}/events/{charge['event_id']}")
    wait_until(browser, lambda d: d.find_element(By.ID, "trace-link"), "the trace link").click()
    wait_until(browser, lambda d: d.find_element(By.ID, "waterfall"), "the waterfall")
    assert browser.current_url == f"{base}/traces/{sample.trace_id}"

    rows = browser.find_elements(By.CSS_SELECTOR, "#waterfall tr.span")
    seen = [
        (
            r.get_attribute("data-span-id"),
            r.get_attribute("data-depth"),
            r.find_element(By.CSS_SELECTOR, ".name").text,
            r.find_element(By.CSS_SELECTOR, ".service").text,
            r.find_element(By.CSS_SELECTOR, ".duration").text,
            r.find_element(By.CSS_SELECTOR, ".status").text,
        )
        for r in rows
    ]
    ids = sample.spans
    assert seen == [
        (ids["POST /checkout"], "0", "POST /checkout", "shop-api", "100 ms", "ok"),
        (ids["reserve stock"], "1", "reserve stock", "shop-api", "18.0 ms", "unset"),
        (ids["SELECT stock"], "2", "SELECT stock", "shop-api", "12.0 ms", "unset"),
        (ids["charge card"], "1", "charge card", "shop-api", "59.0 ms", "error card declined"),
        (ids["authorize"], "2", "authorize", "payments", "45.0 ms", "ok"),
    ]
    # Span events and the span's log inline beneath it; a log's attributes on demand.
    items = browser.find_elements(
        By.CSS_SELECTOR, f'#waterfall tr.item[data-span-id="{ids["charge card"]}"]'
    )
    assert [i.find_element(By.CSS_SELECTOR, ".label").text for i in items] == [
        "retry",
        "exception",
        "ERROR",
    ]
    log = items[2]
    assert "payment declined" in log.text
    log.find_element(By.TAG_NAME, "summary").click()
    wait_until(browser, lambda d: "8812" in log.text, "the log's attributes")
    # Every bar is drawn inside the timeline.
    bars = browser.find_elements(By.CSS_SELECTOR, "#waterfall tr.span svg.bar rect.fill")
    assert len(bars) == 5 and all(b.size["width"] > 0 for b in bars)
    screenshot(browser, "trace", tmp_path)
    assert not console_errors(browser)
