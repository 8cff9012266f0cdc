"""``PrometheusMetrics``: the server's ``SelfMetrics`` (``collector/domain/self_metrics.py``)
kept in a prometheus-client registry of its own, and rendered in the Prometheus text format
for ``GET /metrics``.

One registry per server, never prometheus-client's global default one: two servers in one
process (the tests run many) keep separate numbers, and nothing outlives its server. Every
metric is named ``herald_*`` (plus the standard ``process_*`` of prometheus-client's process
collector); docs/integrations.md lists them.

Label children are looked up once and kept (``_child``), so a report costs a dict lookup and
prometheus-client's per-value lock — per batch, not per item. Gauges of state that already
exists (queue depth, subscribers, calls in flight) are read at scrape time (``gauge``), never
kept up to date on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from collector.domain.self_metrics import BUSY_REASONS, REJECT_REASONS, SIGNALS

# Group commits hold from one event to storage.batch_max_events (50,000 by default).
COMMIT_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000)
# A commit costs ~5 ms here (docs/architecture.md); a checkpoint in it, or a slow disk, more.
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Webhooks answer in milliseconds to their timeout (automations.webhook_timeout_seconds).
WEBHOOK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The classic text format: every Prometheus (and the OTel Collector's prometheus receiver) reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class PrometheusMetrics:
    """``SelfMetrics`` in a per-server ``CollectorRegistry``; ``render()`` is the scrape."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        info = Gauge("herald_build_info", "Herald's version (always 1)", ["version"], registry=r)
        info.labels(version).set(1)
        self._received = Counter(
            "herald_items_received",
            "Items received by the ingest steps, valid or not, per signal",
            ["signal"],
            registry=r,
        )
        self._stored = Counter(
            "herald_items_stored",
            "Items acknowledged as committed, per signal (re-sent duplicates included)",
            ["signal"],
            registry=r,
        )
        self._rejected = Counter(
            "herald_items_rejected",
            "Items not stored, per signal and reason",
            ["signal", "reason"],
            registry=r,
        )
        self._inserted = Counter(
            "herald_events_inserted", "Events written to the store as new rows", registry=r
        )
        self._dedupe = Counter(
            "herald_dedupe_hits",
            "Events committed that were already stored (or repeated in their batch): skipped",
            registry=r,
        )
        self._busy = Counter(
            "herald_busy_answers",
            "Requests answered busy (retry later), per exhausted resource",
            ["reason"],
            registry=r,
        )
        self._commit_events = Histogram(
            "herald_group_commit_events",
            "Events per group commit",
            buckets=COMMIT_SIZE_BUCKETS,
            registry=r,
        )
        self._commit_seconds = Histogram(
            "herald_group_commit_seconds",
            "Time of one group commit (insert and commit)",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self._checkpoints = Counter(
            "herald_checkpoints", "Checkpoint attempts per outcome", ["outcome"], registry=r
        )
        self._retention = Counter(
            "herald_retention_runs", "Retention passes per outcome", ["outcome"], registry=r
        )
        self._retention_deleted = Counter(
            "herald_retention_deleted_events", "Events deleted by retention", registry=r
        )
        self._sql = Counter(
            "herald_sql_queries",
            "User SQL statements per kind (unary, stream) and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self._firings = Counter(
            "herald_automation_firings", "Automation firings stored", registry=r
        )
        self._actions = Counter(
            "herald_automation_actions",
            "Automation action runs finished, per action type and status",
            ["type", "status"],
            registry=r,
        )
        self._webhook = Histogram(
            "herald_webhook_request_seconds",
            "Webhook requests of automations, per outcome (2xx…5xx, timeout, error)",
            ["outcome"],
            buckets=WEBHOOK_SECONDS_BUCKETS,
            registry=r,
        )
        # The label sets known in advance exist from the start (a rate over 0 is 0, not absent).
        for signal in SIGNALS:
            self._received.labels(signal)
            self._stored.labels(signal)
            for reason in REJECT_REASONS:
                self._rejected.labels(signal, reason)
        for reason in BUSY_REASONS:
            self._busy.labels(reason)
        for outcome in ("done", "skipped", "failed"):
            self._checkpoints.labels(outcome)
        for outcome in ("done", "failed"):
            self._retention.labels(outcome)
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}

    def _child(self, metric: Counter, *labels: str) -> Counter:
        # Counter.labels validates and locks on each call; a kept child costs one dict lookup.
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        assert isinstance(child, Counter)
        return child

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped, from state the server keeps anyway."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        """The scrape: every metric in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    # -- SelfMetrics ---------------------------------------------------------------------------

    def ingested(self, signal: str, received: int, rejected: int) -> None:
        self._child(self._received, signal).inc(received)
        if rejected:
            self._child(self._rejected, signal, "invalid").inc(rejected)

    def stored(self, signal: str, items: int) -> None:
        self._child(self._stored, signal).inc(items)

    def refused(self, signal: str, reason: str, items: int) -> None:
        self._child(self._rejected, signal, reason).inc(items)

    def busy(self, reason: str) -> None:
        self._child(self._busy, reason).inc()

    def group_commit(self, events: int, inserted: int, seconds: float) -> None:
        self._commit_events.observe(events)
        self._commit_seconds.observe(seconds)
        self._inserted.inc(inserted)
        if events > inserted:
            self._dedupe.inc(events - inserted)

    def checkpoint(self, outcome: str) -> None:
        self._child(self._checkpoints, outcome).inc()

    def retention_run(self, outcome: str, deleted: int) -> None:
        self._child(self._retention, outcome).inc()
        if deleted:
            self._retention_deleted.inc(deleted)

    def sql_query(self, kind: str, outcome: str) -> None:
        self._child(self._sql, kind, outcome).inc()

    def firings(self, count: int) -> None:
        self._firings.inc(count)

    def action_outcome(self, action_type: str, status: str) -> None:
        self._child(self._actions, action_type, status).inc()

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        self._webhook.labels(outcome).observe(seconds)
