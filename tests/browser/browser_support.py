"""Driving Debian's headless Chromium (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``, which
are version-matched) with Selenium against a real ``herald serve``: starting the browser, waiting
for page conditions, reading the console, emitting events and taking screenshots.

Screenshots go to ``UI_SCREENSHOTS_DIR`` when it is set (``docs/ui`` refreshes the pictures
in docs/ui.md), else to the test's temporary directory — taken either way, so the code that
takes them runs in every test run."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 15.0
T = TypeVar("T")
D = TypeVar("D", bound=WebDriver)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless Chromium; its console log is kept (``console_errors``)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[str]:
    """Console messages of level SEVERE since the last call (the log is drained)."""
    chrome = cast(webdriver.Chrome, driver)  # the log is Chromium's (goog:loggingPrefs)
    return [
        str(entry.get("message"))
        for entry in chrome.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves get_log unannotated
        if entry.get("level") == "SEVERE"
    ]


def wait_until(driver: D, check: Callable[[D], T | None], what: str) -> T:
    """Poll ``check`` (a page condition) until it returns something truthy and return that;
    fail naming ``what``. A page that reloads meanwhile leaves stale or missing elements:
    checked again."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            value = check(driver)
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {WAIT_SECONDS:g} s")
        time.sleep(0.05)


def screenshot(driver: WebDriver, name: str, fallback: Path, max_height: int = 1800) -> Path:
    """A PNG of the page from its top (up to ``max_height`` CSS pixels of it, beyond the
    window) at ``UI_SCREENSHOTS_DIR/<name>.png``, else under ``fallback``."""
    folder = Path(os.environ.get("UI_SCREENSHOTS_DIR") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    chrome = cast(webdriver.Chrome, driver)
    size = chrome.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = chrome.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], max_height),
                "scale": 1,
            },
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def make_event(
    name: str,
    resource_id: str,
    *,
    minutes_ago: float = 0.0,
    related: list[dict[str, str]] | None = None,
    payload: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One Prefect-shaped event (a fresh id)."""
    occurred = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "id": str(uuid.uuid4()),
        "occurred": occurred.isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id, **(labels or {})},
        "related": related or [],
        "payload": payload or {},
    }


def emit(http: str, events: list[dict[str, Any]]) -> None:
    """Send ``events`` to a running server (committed when this returns)."""
    response = httpx.post(f"http://{http}/api/events", json=events, timeout=30)
    assert response.status_code in (200, 201, 202, 204), response.text
