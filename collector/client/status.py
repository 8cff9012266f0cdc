"""``read_status``: a running server's readiness (``GET /readyz``) and self-metrics
(``GET /metrics``, parsed with prometheus-client's own text parser), for ``herald status``.

These live on the HTTP port (the one Prometheus and load balancers use), so this client speaks
HTTP, not gRPC: ``http`` is the server's HTTP ``host:port`` (or a full ``http(s)://`` URL).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from collector import errors as e

DEFAULT_HTTP_ADDRESS = "127.0.0.1:4318"

# One sample: (its name, its labels as sorted pairs) → its value.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class ServerStatus:
    """What ``/readyz`` and ``/metrics`` said."""

    url: str
    ready: bool
    readiness: dict[str, Any]
    samples: dict[SampleKey, float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
        want = labels.items()
        return sum(
            v
            for (n, got), v in self.samples.items()
            if n == name and all(pair in got for pair in want)
        )

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        """``name``'s samples (those whose labels include ``match``) summed per value of
        ``label``."""
        found: dict[str, float] = {}
        want = match.items()
        for (n, got), v in self.samples.items():
            if n == name and all(pair in got for pair in want):
                key = dict(got).get(label, "")
                found[key] = found.get(key, 0.0) + v
        return found


def base_url(http: str | None) -> str:
    """``http://host:port`` from an address (``HERALD_HTTP_ADDRESS``, else the default)."""
    address = http or os.environ.get("HERALD_HTTP_ADDRESS") or DEFAULT_HTTP_ADDRESS
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    return f"http://{address}"


def parse_metrics(text: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def read_status(http: str | None, token: str | None, timeout: float = 10.0) -> ServerStatus:
    """Readiness and metrics of the server at ``http``. Raises ``ServerUnreachable`` when
    nothing answers there, ``Unauthenticated`` / ``PermissionDenied`` when ``/metrics`` wants
    a token with the read scope."""
    url = base_url(http)
    token = token if token is not None else os.environ.get("HERALD_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, timeout=timeout, headers=headers) as client:
            ready = client.get("/readyz")
            metrics = client.get("/metrics")
    except httpx.TransportError as exc:
        raise e.ServerUnreachable(
            f"no Herald server answers HTTP at {url} ({type(exc).__name__})"
        ) from None
    if ready.status_code not in (200, 503) or "application/json" not in ready.headers.get(
        "content-type", ""
    ):
        raise e.ServerUnreachable(f"{url} is not a Herald server (/readyz: {ready.status_code})")
    _raise_for(metrics, url)
    return ServerStatus(
        url=url,
        ready=ready.status_code == 200,
        readiness=ready.json(),
        samples=parse_metrics(metrics.text),
    )


def _raise_for(reply: httpx.Response, url: str) -> None:
    if reply.status_code == 200:
        return
    detail = _detail(reply)
    if reply.status_code == 401:
        raise e.Unauthenticated(detail)
    if reply.status_code == 403:
        raise e.PermissionDenied(detail)
    raise e.HeraldError(f"{url}/metrics answered {reply.status_code}: {detail}")


def _detail(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200]
    return str(body.get("detail", body)) if isinstance(body, Mapping) else str(body)
