"""Signing in to the web UI when tokens are configured: ``GET /login`` asks for a token once,
``POST /login`` checks it and keeps it in an HttpOnly cookie (``SameSite=Lax``: a shared link
opens signed in, and no GET changes anything; state changes are guarded in
``collector.server.http_server``), ``POST /logout`` forgets it. Also ``GET /static/{name}``."""

from __future__ import annotations

from aiohttp import web

from collector.errors import HeraldError
from collector.server.http_server import TOKEN_COOKIE, Route
from collector.web.context import WebContext

COOKIE_DAYS = 30


def safe_next(target: str) -> str:
    """Where to go after signing in: a path of this site only (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def sign_in_routes(ctx: WebContext) -> list[Route]:
    async def login_form(request: web.Request) -> web.StreamResponse:
        target = safe_next(request.query.get("next", "/"))
        if not ctx.auth.enabled:
            return web.Response(status=303, headers={"Location": target})
        return ctx.pages.page("login.html", nav="sign-in", next=target, error="")

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        target = safe_next(str(form.get("next", "/")))
        try:
            ctx.auth.scopes(f"Bearer {token}")  # any known token signs in; scopes apply per page
        except HeraldError:
            return ctx.pages.page(
                "login.html",
                status=401,
                nav="sign-in",
                next=target,
                error="That token is not known here.",
            )
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            max_age=COOKIE_DAYS * 86_400,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(TOKEN_COOKIE, path="/")
        return response

    async def static(request: web.Request) -> web.StreamResponse:
        return ctx.pages.static_response(request.match_info["name"])

    return [
        Route("GET", "/login", login_form, None),
        Route("POST", "/login", login, None),
        Route("POST", "/logout", logout, None),
        Route("GET", "/static/{name}", static, None),
    ]
