"""``PrometheusMetrics``: the server's ``SelfMetrics`` (``collector/domain/self_metrics.py``),
rendered in the Prometheus text format by prometheus-client for ``GET /metrics``.

Counting and showing are apart. A report from the hot path adds to plain numbers under one
lock (about a microsecond per report; per batch, commit or query, never per item); the
prometheus-client objects are built only when ``/metrics`` is scraped, by this object's
``collect`` (a prometheus-client custom collector). Gauges of state the server keeps anyway
(queue depth, subscribers, calls in flight) are read at that moment too (``gauge``), never kept
up to date on the hot path.

One ``CollectorRegistry`` per server, never prometheus-client's global default one: two
servers in one process (the tests run many) keep separate numbers, and nothing outlives its
server. Every metric is named ``herald_*`` (plus the standard ``process_*`` of
prometheus-client's process collector); docs/integrations.md lists them.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from collector.domain.self_metrics import BUSY_REASONS, REJECT_REASONS, SIGNALS

# The classic text format: every Prometheus, and the OTel Collector's prometheus receiver,
# reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Group commits hold from one event to storage.batch_max_events (50,000 by default).
COMMIT_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000)
# A commit costs ~5 ms here (docs/architecture.md); a checkpoint in it, or a slow disk, more.
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Webhooks answer in milliseconds to their timeout (automations.webhook_timeout_seconds).
WEBHOOK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Counters: name (without _total) → (help, label names). Their values live in
# ``PrometheusMetrics._counts`` under (name, *label values).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "herald_items_received": (
        "Items received by the ingest steps, valid or not, per signal",
        ("signal",),
    ),
    "herald_items_stored": (
        "Items acknowledged as committed, per signal (re-sent duplicates included)",
        ("signal",),
    ),
    "herald_items_rejected": ("Items not stored, per signal and reason", ("signal", "reason")),
    "herald_events_inserted": ("Events written to the store as new rows", ()),
    "herald_dedupe_hits": (
        "Events committed that were already stored (or repeated in their batch): skipped",
        (),
    ),
    "herald_busy_answers": (
        "Requests answered busy (retry later), per exhausted resource",
        ("reason",),
    ),
    "herald_checkpoints": ("Checkpoint attempts per outcome", ("outcome",)),
    "herald_retention_runs": ("Retention passes per outcome", ("outcome",)),
    "herald_retention_deleted_events": ("Events deleted by retention", ()),
    "herald_sql_queries": (
        "User SQL statements per kind (unary, stream) and outcome",
        ("kind", "outcome"),
    ),
    "herald_automation_firings": ("Automation firings stored", ()),
    "herald_automation_actions": (
        "Automation action runs finished, per action type and status",
        ("type", "status"),
    ),
}

# Histograms: name → (help, label names, bucket bounds).
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "herald_group_commit_events": ("Events per group commit", (), COMMIT_SIZE_BUCKETS),
    "herald_group_commit_seconds": (
        "Time of one group commit (insert and commit)",
        (),
        COMMIT_SECONDS_BUCKETS,
    ),
    "herald_webhook_request_seconds": (
        "Webhook requests of automations, per outcome (2xx…5xx, timeout, error)",
        ("outcome",),
        WEBHOOK_SECONDS_BUCKETS,
    ),
}


class _Histogram:
    """Bucket counts (not cumulative; the last one is +Inf), sum and count of observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are "less than or equal" (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            buckets.append((bound, running))
        return buckets


def _le(bound: float) -> str:
    return repr(float(bound))


class PrometheusMetrics:
    """``SelfMetrics`` kept as plain numbers, shown through a per-server ``CollectorRegistry``;
    ``render()`` is the scrape."""

    def __init__(self, version: str) -> None:
        self._version = version
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], float] = {}
        self._histograms: dict[tuple[str, ...], _Histogram] = {}
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []
        # The label sets known in advance exist from the start (a rate over 0 is 0, not absent).
        for name, (_, labels) in COUNTERS.items():
            if not labels:
                self._counts[(name,)] = 0
        for signal in SIGNALS:
            self._counts[("herald_items_received", signal)] = 0
            self._counts[("herald_items_stored", signal)] = 0
            for reason in REJECT_REASONS:
                self._counts[("herald_items_rejected", signal, reason)] = 0
        for reason in BUSY_REASONS:
            self._counts[("herald_busy_answers", reason)] = 0
        for outcome in ("done", "skipped", "failed"):
            self._counts[("herald_checkpoints", outcome)] = 0
        for outcome in ("done", "failed"):
            self._counts[("herald_retention_runs", outcome)] = 0
        for name, (_, labels, bounds) in HISTOGRAMS.items():
            if not labels:
                self._histograms[(name,)] = _Histogram(bounds)
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped, from state the server keeps anyway."""
        self._gauges.append((name, documentation, read))

    def render(self) -> bytes:
        """The scrape: every metric in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector call: the numbers as metric families, now."""
        with self._lock:
            counts = dict(self._counts)
            histograms = {
                key: (h.cumulative(), h.total, h.bounds) for key, h in self._histograms.items()
            }
        info = GaugeMetricFamily(
            "herald_build_info", "Herald's version (always 1)", labels=["version"]
        )
        info.add_metric([self._version], 1)
        yield info
        for name, (documentation, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            for key, value in sorted(counts.items()):
                if key[0] == name:
                    family.add_metric(list(key[1:]), value)
            yield family
        for name, (documentation, labels, _) in HISTOGRAMS.items():
            hist = HistogramMetricFamily(name, documentation, labels=list(labels))
            for key, (buckets, total, _) in sorted(histograms.items()):
                if key[0] == name:
                    hist.add_metric(list(key[1:]), buckets, total)
            yield hist
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())

    def _add(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        # Called with the lock held.
        hist = self._histograms.get(key)
        if hist is None:
            hist = self._histograms[key] = _Histogram(HISTOGRAMS[key[0]][2])
        hist.observe(value)

    # -- SelfMetrics ---------------------------------------------------------------------------

    def ingested(self, signal: str, received: int, rejected: int) -> None:
        counts = self._counts
        with self._lock:
            key = ("herald_items_received", signal)
            counts[key] = counts.get(key, 0) + received
            if rejected:
                invalid = ("herald_items_rejected", signal, "invalid")
                counts[invalid] = counts.get(invalid, 0) + rejected

    def stored(self, signal: str, items: int) -> None:
        self._add(("herald_items_stored", signal), items)

    def refused(self, signal: str, reason: str, items: int) -> None:
        self._add(("herald_items_rejected", signal, reason), items)

    def busy(self, reason: str) -> None:
        self._add(("herald_busy_answers", reason), 1)

    def group_commit(self, events: int, inserted: int, seconds: float) -> None:
        counts = self._counts
        with self._lock:
            self._observe(("herald_group_commit_events",), events)
            self._observe(("herald_group_commit_seconds",), seconds)
            counts[("herald_events_inserted",)] += inserted
            counts[("herald_dedupe_hits",)] += events - inserted

    def checkpoint(self, outcome: str) -> None:
        self._add(("herald_checkpoints", outcome), 1)

    def retention_run(self, outcome: str, deleted: int) -> None:
        with self._lock:
            key = ("herald_retention_runs", outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._counts[("herald_retention_deleted_events",)] += deleted

    def sql_query(self, kind: str, outcome: str) -> None:
        self._add(("herald_sql_queries", kind, outcome), 1)

    def firings(self, count: int) -> None:
        self._add(("herald_automation_firings",), count)

    def action_outcome(self, action_type: str, status: str) -> None:
        self._add(("herald_automation_actions", action_type, status), 1)

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._observe(("herald_webhook_request_seconds", outcome), seconds)
