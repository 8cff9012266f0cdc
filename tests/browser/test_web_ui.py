"""The web UI in a real browser (headless Chromium from Debian, through Selenium) against a real
``herald serve`` on port 0: filter and page the feed, open an event, Automate → save → the next
matching event fires a webhook, pause from the automations page, live mode shows new events,
and no page logs an error to the console. One server and one browser for the module."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from collector.testing import ServedProcess, ports_zero, serve_process, wait_for, webhook_receiver
from tests.browser.browser_support import (
    chromium,
    console_errors,
    emit,
    make_event,
    screenshot,
    wait_until,
)

pytestmark = pytest.mark.e2e

TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    db = tmp_path_factory.mktemp("web") / "herald.duckdb"
    with serve_process(*ports_zero(db)) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(autouse=True)
def no_console_errors(browser: WebDriver) -> Iterator[None]:
    console_errors(browser)  # drop what an earlier test left
    yield
    errors = console_errors(browser)
    assert not errors, f"the browser console logged errors: {errors}"


@pytest.fixture(scope="module")
def seeded(server: ServedProcess) -> dict[str, Any]:
    """60 ``web.alpha`` events on three resources (related to a flow), 10 ``web.beta`` events,
    one OTel-shaped span event with a trace."""
    alpha = [
        make_event(
            "web.alpha.done",
            f"web.thing.{i % 3}",
            minutes_ago=30 + i,
            related=[
                {
                    "prefect.resource.id": "web.flow.etl",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": "etl",
                }
            ],
            payload={"i": i, "detail": {"rows": [1, 2, 3], "note": "<b>not bold</b>"}},
            labels={"prefect.resource.name": f"thing-{i % 3}", "team": "blue" if i % 2 else "red"},
        )
        for i in range(60)
    ]
    beta = [make_event("web.beta.failed", "web.other", minutes_ago=100 + i) for i in range(10)]
    span = make_event(
        "otel.span",
        "otel.service.checkout",
        minutes_ago=5,
        related=[
            {"prefect.resource.id": f"otel.trace.{TRACE_HEX}", "prefect.resource.role": "trace"}
        ],
        labels={"otel.trace_id": TRACE_HEX},
    )
    emit(server.http, [*alpha, *beta, span])
    return {"alpha": alpha, "beta": beta, "span": span}


def rows(browser: WebDriver) -> list[str]:
    return [
        str(tr.get_attribute("data-id"))
        for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")
    ]


def bars(browser: WebDriver) -> list[WebElement]:
    """The histogram's bars, once the page has fetched it."""
    return wait_until(
        browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#histogram rect.bar"), "histogram"
    )


def query_of(browser: WebDriver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(browser.current_url).query)


def test_feed_filters_and_pages(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any], shots: Path
) -> None:
    base = f"http://{server.http}"
    browser.get(base + "/")
    assert browser.title == "Events · Herald"
    assert len(rows(browser)) == 50  # one page
    bars(browser)
    screenshot(browser, "feed", shots)

    # The seeded alpha events (other tests add their own events): newest first, then the next
    # page through the keyset token — the rest, none twice.
    alpha = sorted(seeded["alpha"], key=lambda e: str(e["occurred"]), reverse=True)
    browser.get(base + "/?event=web.alpha.*")
    first = rows(browser)
    assert first == [e["id"] for e in alpha[:50]]
    browser.find_element(By.ID, "next-page").click()
    wait_until(browser, lambda b: "page" in query_of(b), "the next page")
    second = rows(browser)
    assert second == [e["id"] for e in alpha[50:]]
    assert query_of(browser)["event"] == ["web.alpha.*"]  # the filters stay in the URL

    # A filter typed into the form lands in the URL; the back button returns to the page before.
    browser.get(base + "/")
    box = browser.find_element(By.NAME, "event")
    box.send_keys("web.beta.*", Keys.ENTER)
    wait_until(browser, lambda b: query_of(b).get("event") == ["web.beta.*"], "event filter")
    assert {e["id"] for e in seeded["beta"]} <= set(rows(browser))
    assert all("web.beta." in t.text for t in browser.find_elements(By.CSS_SELECTOR, "#rows tr"))

    # Text search and a label filter together.
    browser.get(base + "/?q=etl&label=team%3Dblue")
    assert len(rows(browser)) == 30
    assert "30 events" in browser.find_element(By.ID, "total").text

    # A resource chip filters by its resource.
    browser.get(base + "/?event=web.alpha.*")
    browser.find_element(By.CSS_SELECTOR, "#rows tr td:nth-child(2) a.chip").click()
    wait_until(browser, lambda b: "resource" in query_of(b), "resource chip filter")
    resource = query_of(browser)["resource"][0]
    assert len(rows(browser)) == 20 and resource.startswith("web.thing.")
    browser.back()
    wait_until(browser, lambda b: "resource" not in query_of(b), "back to the unfiltered page")
    assert len(rows(browser)) == 50

    # A related resource chip filters by it (and its role).
    browser.find_element(By.CSS_SELECTOR, "#rows tr td:nth-child(3) a.chip").click()
    wait_until(browser, lambda b: query_of(b).get("role") == ["flow"], "related chip filter")
    assert query_of(browser)["related"] == ["web.flow.etl"]

    # Clicking a histogram bar zooms to its bucket: a custom range in the URL.
    browser.get(base + "/")
    bar = bars(browser)[0].find_element(By.XPATH, "..")
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", bar
    )
    wait_until(browser, lambda b: "since" in query_of(b), "zoom to a bar")
    assert 0 < len(rows(browser)) < 50

    # Dragging across the chart zooms to the span dragged over (about a quarter of 24 h).
    browser.get(base + "/")
    bars(browser)
    chart = browser.find_element(By.ID, "histogram")
    width = chart.size["width"]
    drag = ActionChains(browser).move_to_element_with_offset(chart, -width // 4, 0)
    drag.click_and_hold().move_by_offset(width // 4, 0).release().perform()
    wait_until(browser, lambda b: "since" in query_of(b), "zoom to the dragged span")
    q = query_of(browser)
    span = datetime.fromisoformat(q["until"][0]) - datetime.fromisoformat(q["since"][0])
    assert timedelta(hours=4) < span < timedelta(hours=8), span
    assert "range" not in q

    # Bad input is a clear message on the page, not a server error.
    browser.get(base + "/?since=yesterday-ish")
    assert "is not a date and time" in browser.find_element(By.CSS_SELECTOR, ".error").text
    # The page answered 400, which the console reports; nothing else went wrong.
    assert all("400 (Bad Request)" in e for e in console_errors(browser))


def test_event_page(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any], shots: Path
) -> None:
    base = f"http://{server.http}"
    browser.get(base + "/?event=web.alpha.*")
    target = rows(browser)[0]
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{target}"] a.event-name').click()
    wait_until(browser, lambda b: b.current_url.endswith(f"/events/{target}"), "event page")
    resource = browser.find_element(By.ID, "resource").text
    assert "prefect.resource.id" in resource and "team" in resource
    related = browser.find_element(By.ID, "related").text
    assert "flow" in related and "web.flow.etl" in related
    payload = browser.find_element(By.ID, "payload")
    assert "<b>not bold</b>" in payload.text  # escaped, shown as text
    assert not payload.find_elements(By.TAG_NAME, "b")
    raw = browser.find_element(By.ID, "raw-json").text
    assert target in raw
    assert browser.find_element(By.ID, "automate").text == "Automate"
    assert not browser.find_elements(By.ID, "trace-link")
    screenshot(browser, "event", shots)

    # An OTel event links to its trace.
    browser.get(f"{base}/events/{seeded['span']['id']}")
    link = browser.find_element(By.ID, "trace-link")
    assert str(link.get_attribute("href")).endswith(f"/traces/{TRACE_HEX}")

    # An unknown event is a 404 page.
    browser.get(f"{base}/events/00000000-0000-4000-8000-000000000000")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert all("404 (Not Found)" in e for e in console_errors(browser))


def test_automate_save_fires_on_the_next_event(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any], shots: Path
) -> None:
    base = f"http://{server.http}"
    event = seeded["beta"][0]
    with webhook_receiver() as receiver:
        browser.get(f"{base}/events/{event['id']}")
        browser.find_element(By.ID, "automate").click()
        wait_until(browser, lambda b: b.find_elements(By.ID, "automate-form"), "automate form")
        # Prefilled with Prefect's default trigger for the event.
        assert browser.find_element(By.ID, "expect").get_attribute("value") == "web.beta.failed"
        assert "web.other" in str(browser.find_element(By.ID, "match").get_attribute("value"))
        assert browser.find_element(By.ID, "threshold").get_attribute("value") == "1"
        url = browser.find_element(By.ID, "webhook-url")
        url.send_keys(f"{receiver.url}/hook")
        browser.find_element(By.ID, "preview").click()

        def previewed(b: WebDriver) -> str | None:
            text = b.find_element(By.ID, "preview-result").text
            return text if "Would have fired" in text else None

        result = wait_until(browser, previewed, "the backtest preview")
        assert "Would have fired 10 times" in result, result
        screenshot(browser, "automate", shots)
        browser.find_element(By.ID, "save").click()
        wait_until(browser, lambda b: "/automations/" in b.current_url, "the saved automation")
        automation_id = browser.current_url.rsplit("/", 1)[1]
        assert "web.beta.failed" in browser.find_element(By.ID, "trigger-json").text

        emit(server.http, [make_event("web.beta.failed", "web.other")])
        wait_for(lambda: receiver.requests, what="the webhook")
        assert receiver.paths == ["/hook"]
        assert "web.beta.failed" in receiver.requests[0]["body"]

        # The firing and its action run show in the automation's history.
        def fired(b: WebDriver) -> bool:
            b.refresh()
            return bool(b.find_elements(By.CSS_SELECTOR, "#history .run"))

        wait_until(browser, fired, "the firing in the history")

        def executed(b: WebDriver) -> bool:
            b.refresh()
            return "executed" in b.find_element(By.ID, "history").text

        wait_until(browser, executed, "the executed run")
        screenshot(browser, "automation", shots)
    response = httpx.get(f"{base}/api/automations/{automation_id}")
    assert response.json()["enabled"] is True


def test_pause_resume_delete_from_the_automations_page(
    server: ServedProcess, browser: WebDriver, shots: Path
) -> None:
    base = f"http://{server.http}"
    created = httpx.post(
        f"{base}/api/automations/",
        json={
            "name": "pause me",
            "trigger": {"type": "event", "posture": "Reactive", "expect": ["web.never"]},
            "actions": [{"type": "do-nothing"}],
        },
    )
    assert created.status_code in (200, 201), created.text
    automation_id = created.json()["id"]
    browser.get(base + "/automations")
    row = f'#automations tr[data-id="{automation_id}"]'
    assert browser.find_element(By.CSS_SELECTOR, f"{row} .state").text == "Enabled"
    screenshot(browser, "automations", shots)
    browser.find_element(By.CSS_SELECTOR, f'{row} [data-automation-action="pause"]').click()
    wait_until(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, f"{row} .state").text == "Paused",
        "paused",
    )
    assert httpx.get(f"{base}/api/automations/{automation_id}").json()["enabled"] is False
    browser.find_element(By.CSS_SELECTOR, f'{row} [data-automation-action="resume"]').click()
    wait_until(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, f"{row} .state").text == "Enabled",
        "resumed",
    )
    browser.find_element(By.CSS_SELECTOR, f'{row} [data-automation-action="delete"]').click()
    browser.switch_to.alert.accept()
    wait_until(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, row), "deleted")
    assert httpx.get(f"{base}/api/automations/{automation_id}").status_code == 404


def test_live_mode_shows_new_events(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any]
) -> None:
    base = f"http://{server.http}"
    browser.get(base + "/?event=web.live.*")
    assert not rows(browser)
    button = browser.find_element(By.ID, "live")
    button.click()
    wait_until(browser, lambda b: b.find_element(By.ID, "live-status").text == "Live", "live")
    assert query_of(browser).get("live") == ["1"]
    first = make_event("web.live.tick", "web.ticker")
    emit(server.http, [first, make_event("web.other.tick", "web.ticker")])
    wait_until(browser, lambda b: rows(b) == [first["id"]], "the new event listed")

    # Scrolled down, new events wait behind an "N new events" button.
    # Only web.* events: the other tests' herald.automation.* events cannot join in.
    browser.get(base + "/?event=web.*&live=1")
    wait_until(browser, lambda b: b.find_element(By.ID, "live-status").text == "Live", "live")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait_until(browser, lambda b: b.execute_script("return window.scrollY") > 80, "scrolled")
    later = [make_event("web.live.tock", "web.ticker") for _ in range(3)]
    emit(server.http, later)

    def shown(b: WebDriver) -> WebElement | None:
        button = b.find_element(By.ID, "new-events")
        return button if button.is_displayed() else None

    more = wait_until(browser, shown, "the new-events button")
    wait_until(browser, lambda b: more.text == "3 new events", f"three held back ({more.text})")
    assert later[0]["id"] not in rows(browser)
    more.click()
    wait_until(
        browser,
        lambda b: {e["id"] for e in later} <= set(rows(b)[:3]),
        "the held events on top",
    )
    # Leaving live mode closes the stream.
    browser.find_element(By.ID, "live").click()
    assert "live" not in query_of(browser)


def test_keyboard_and_select(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any]
) -> None:
    base = f"http://{server.http}"
    browser.get(base + "/")
    # "/" focuses the search box; j moves to the first event.
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("name") == "q"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    body.send_keys("j")
    active = browser.switch_to.active_element
    assert "event-name" in str(active.get_attribute("class"))
    # A preset range clears the custom times.
    Select(browser.find_element(By.ID, "range")).select_by_value("1h")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_until(browser, lambda b: query_of(b).get("range") == ["1h"], "1h range")


def test_dark_mode_and_long_values(
    server: ServedProcess, browser: WebDriver, seeded: dict[str, Any], shots: Path
) -> None:
    base = f"http://{server.http}"
    browser.get(base + "/")
    light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert light == "rgb(255, 255, 255)" and dark == "rgb(20, 22, 26)"
        screenshot(browser, "feed-dark", shots, max_height=900)
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    # A truncated value opens in full on click.
    cut = browser.find_element(By.CSS_SELECTOR, "#rows .trunc")
    assert "open" not in str(cut.get_attribute("class"))
    cut.click()
    assert "open" in str(cut.get_attribute("class"))


def test_sign_in_once_with_a_token(
    tmp_path_factory: pytest.TempPathFactory, browser: WebDriver, shots: Path
) -> None:
    """With tokens configured the UI asks for a token once and keeps it in an HttpOnly cookie
    that page scripts cannot read; signing out forgets it."""
    folder = tmp_path_factory.mktemp("secured")
    config = folder / "herald.toml"
    config.write_text('[auth]\ntokens = [{token = "browser-read-token", scopes = ["read"]}]\n')
    with serve_process(*ports_zero(folder / "h.duckdb", "--config", str(config))) as served:
        base = f"http://{served.http}"
        browser.get(base + "/automations")
        wait_until(browser, lambda b: "/login" in b.current_url, "the sign-in page")
        screenshot(browser, "sign-in", shots, max_height=600)
        token = browser.find_element(By.ID, "token")
        token.send_keys("wrong-token-value", Keys.ENTER)
        wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".error"), "refused")
        assert all("401" in e for e in console_errors(browser))
        browser.find_element(By.ID, "token").send_keys("browser-read-token", Keys.ENTER)
        wait_until(browser, lambda b: urlsplit(b.current_url).path == "/automations", "signed in")
        cookie = browser.get_cookie("herald_token")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert browser.execute_script("return document.cookie") == ""  # not readable by scripts
        browser.get(base + "/")
        assert browser.title == "Events · Herald"
        browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
        wait_until(browser, lambda b: "/login" in b.current_url, "signed out")
        assert browser.get_cookie("herald_token") is None
