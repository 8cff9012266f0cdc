"""The web UI's sign-in and request guards against a real server (in-process, httpx): a token
asked once and kept in an HttpOnly cookie, read vs admin scope, nothing changed by GET, and
state changes a browser would send from another site refused (CSRF)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from collector.app import Herald
from collector.testing import running_herald, test_config

READ = "web-read-token"
ADMIN = "web-admin-token"
INGEST = "web-ingest-token"
PREVIEW = {
    "name": "preview",
    "trigger": {"type": "event", "posture": "Reactive", "expect": ["x.y"]},
    "actions": [{"type": "do-nothing"}],
}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Herald]:
    tokens = [
        {"token": READ, "scopes": ["read"]},
        {"token": ADMIN, "scopes": ["admin"]},
        {"token": INGEST, "scopes": ["ingest"]},
    ]
    with running_herald(test_config(tmp_path / "h.duckdb", auth={"tokens": tokens})) as server:
        yield server


def client(server: Herald) -> httpx.Client:
    return httpx.Client(base_url=f"http://{server.http_address}", follow_redirects=False)


@contextmanager
def signed_in(server: Herald, token: str) -> Iterator[httpx.Client]:
    with client(server) as c:
        response = c.post("/login", data={"token": token, "next": "/automations"})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/automations"
        yield c


def test_pages_ask_for_a_token_once(secured: Herald) -> None:
    with client(secured) as c:
        response = c.get("/?event=a.b")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2F%3Fevent%3Da.b"
        form = c.get("/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        # The sign-in page's stylesheet and script load without a token.
        for path in re.findall(r'(?:href|src)="(/static/[^"]+)"', form.text):
            assert c.get(path).status_code == 200, path
        wrong = c.post("/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "not known" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = c.post("/login", data={"token": READ, "next": "/events/x"})
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        assert c.get("/").status_code == 200  # the cookie from now on
        out = c.post("/logout")
        assert out.status_code == 303
        assert c.get("/").status_code == 303


def test_sign_in_redirects_only_within_the_site(secured: Herald) -> None:
    with client(secured) as c:
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
            response = c.post("/login", data={"token": READ, "next": target})
            assert response.headers["location"] == "/", target


def test_a_bearer_header_works_too(secured: Herald) -> None:
    with client(secured) as c:
        assert c.get("/", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
        # An ingest-only token cannot read the feed.
        denied = c.get("/", headers={"Authorization": f"Bearer {INGEST}"})
        assert denied.status_code == 403 and "read" in denied.text


def test_read_scope_sees_admin_scope_changes(secured: Herald) -> None:
    with signed_in(secured, READ) as c:
        page = c.get("/automations")
        assert page.status_code == 200
        page = c.get("/automate")
        assert "no <code>admin</code> scope" in page.text
    with signed_in(secured, ADMIN) as c:
        assert "no <code>admin</code> scope" not in c.get("/automate").text


def test_cookie_changes_need_the_ui_header_and_the_same_origin(secured: Herald) -> None:
    with signed_in(secured, ADMIN) as c:
        # A cross-site form can send the cookie, but neither a custom header nor our Origin.
        plain = c.post("/automate/preview", json=PREVIEW)
        assert plain.status_code == 403 and "X-Herald-Request" in plain.text
        ok = c.post("/automate/preview", json=PREVIEW, headers={"X-Herald-Request": "1"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["firings"] == 0
        host = f"http://{secured.http_address}"
        same = c.post(
            "/automate/preview", json=PREVIEW, headers={"X-Herald-Request": "1", "Origin": host}
        )
        assert same.status_code == 200
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            refused = c.post(
                "/automate/preview", json=PREVIEW, headers={"X-Herald-Request": "1", **headers}
            )
            assert refused.status_code == 403, headers
            assert "cross-site" in refused.text
        # Reads by GET are not affected by an Origin (a link from elsewhere opens the page).
        assert c.get("/", headers={"Origin": "http://evil.example"}).status_code == 200


def test_without_tokens_cross_site_changes_are_refused_too(tmp_path: Path) -> None:
    """No tokens (loopback only): a page on another site must still not drive the local
    server through the visitor's browser."""
    with running_herald(test_config(tmp_path / "h.duckdb")) as server, client(server) as c:
        evil = {"Origin": "http://evil.example"}
        assert c.post("/automate/preview", json=PREVIEW, headers=evil).status_code == 403
        assert c.post("/api/events/filter", json={}, headers=evil).status_code == 403
        # curl and SDKs send no Origin.
        assert c.post("/automate/preview", json=PREVIEW).status_code == 200
        # Ingest stays open to browsers (OTel JS exporters post cross-origin).
        accepted = c.post("/api/events", json=[], headers=evil)
        assert accepted.status_code != 403
        # Sign-in is not needed: /login goes straight to the page.
        response = c.get("/login?next=/automations")
        assert response.status_code == 303 and response.headers["location"] == "/automations"


def test_pages_carry_a_content_security_policy(tmp_path: Path) -> None:
    with running_herald(test_config(tmp_path / "h.duckdb")) as server, client(server) as c:
        for path in ("/", "/automations", "/automate", "/login?next=/", "/events/nope"):
            response = c.get(path, follow_redirects=True)
            csp = response.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in response.text  # no inline script anywhere
