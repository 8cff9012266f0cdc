"""Health, readiness and self-metrics on the HTTP port, following the OTel Collector's
conventions:

* ``GET /healthz`` — the process is alive and its event loop answers (200, always, while it
  serves at all);
* ``GET /readyz`` — ready to take traffic: the store is open, the writer thread alive, the
  automations evaluator running and the server not draining; 503 otherwise, naming what is
  not. Both are open to anyone (no token), cheap (a few attribute reads, no store query) and
  name Herald's version.
* ``GET /metrics`` — the Prometheus text format (``prometheus_metrics.py``), with the ``read``
  scope when tokens are configured.

What "ready" means is decided by ``app.py`` (``Herald.readiness``); this module only answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from collector.config import Scope
from collector.server.http_server import Route

# check name → None when it passes, else why not (e.g. "writer": "the writer thread stopped").
Readiness = Callable[[], Mapping[str, str | None]]


def health_routes(
    version: str,
    readiness: Readiness,
    render_metrics: Callable[[], bytes],
    metrics_content_type: str,
) -> list[Route]:
    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive", "version": version})

    async def readyz(request: web.Request) -> web.StreamResponse:
        checks = readiness()
        failing = [f"{name}: {why}" for name, why in checks.items() if why is not None]
        body: dict[str, object] = {
            "status": "ready" if not failing else "not ready",
            "version": version,
            "checks": {name: why or "ok" for name, why in checks.items()},
        }
        if failing:
            body["reason"] = "; ".join(failing)
            # A probe or a load balancer asks again on its own period; the hint is for scripts.
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        return web.json_response(body)

    async def metrics(request: web.Request) -> web.StreamResponse:
        # Rendered on the loop: a few hundred lines of counters, well under a millisecond.
        return web.Response(body=render_metrics(), headers={"Content-Type": metrics_content_type})

    return [
        Route("GET", "/healthz", healthz, None),
        Route("GET", "/readyz", readyz, None),
        Route("GET", "/metrics", metrics, Scope.READ),
    ]
