"""``SelfMetrics``: what Herald counts about itself, as the parts that do the work see it.

The writer, the ingest steps, the live tail, the admission step, the SQL lane and the
automations runtime are handed one object of this interface by ``app.py`` and call it with
plain numbers — once per batch, commit, query, firing or action, never once per item, so the
ingest hot path pays a few calls per request whatever its size. They know nothing of how the
numbers are kept or shown: ``collector/server/prometheus_metrics.py`` keeps them in a
prometheus-client registry of the server's own (``GET /metrics``), and ``NoMetrics`` drops them
(parts built without a server: tests, benchmarks, the embedded exporter).

Label values are small closed sets named here (signals, reasons, outcomes), never user input,
so a scrape stays a few hundred lines whatever is stored.
"""

from __future__ import annotations

from typing import Protocol

from collector import errors as e

# Ingested signals: Prefect-shaped events (native gRPC/HTTP, the automations' own events) and
# the OTLP signals (metrics are answered, never stored: their data points count as rejected).
SIGNALS = ("events", "spans", "logs", "metrics")

# Why items were refused. ``invalid``: an item failed validation (the rest were stored), or the
# store refused a batch's data; ``busy``: the queue was full (retry); ``unavailable``: the store
# failed or is shutting down (retry); ``not_stored``: OTLP metrics, which Herald does not keep;
# ``error``: anything unexpected (a bug, logged).
REJECT_REASONS = ("invalid", "busy", "unavailable", "not_stored", "error")

# What a busy answer ran out of.
BUSY_REASONS = ("ingest_queue", "mapping_workers", "grpc_calls", "grpc_bytes", "sql", "tail")


def reason_of(exc: BaseException) -> str:
    """The ``REJECT_REASONS`` entry for an error that refused a whole batch."""
    if isinstance(exc, e.Busy):
        return "busy"
    if isinstance(exc, e.InvalidInput | e.EventTooLarge | e.PayloadTooLarge):
        return "invalid"
    if isinstance(exc, e.StoreError):
        return "unavailable"
    return "error"


def sql_outcome_of(exc: BaseException) -> str:
    """A user SQL statement's outcome label for the error that ended it."""
    if isinstance(exc, e.Busy):
        return "busy"
    if isinstance(exc, e.PayloadTooLarge):
        return "too_large"
    if isinstance(exc, e.InvalidInput):
        # time_limit_error is an InvalidInput whose message names the limit.
        return "timeout" if "time limit" in str(exc) else "invalid"
    if isinstance(exc, e.StoreError):
        return "unavailable"
    if isinstance(exc, e.Unauthenticated | e.PermissionDenied):
        return "denied"
    return "error"


class SelfMetrics(Protocol):
    """Counts and timings the server's parts report (see the module doc)."""

    def ingested(self, signal: str, received: int, rejected: int) -> None:
        """One request of ``signal`` items mapped: ``received`` items, ``rejected`` of them
        invalid (the others were handed to the store)."""

    def stored(self, signal: str, items: int) -> None:
        """``items`` of ``signal`` acknowledged as committed (re-sent duplicates included)."""

    def refused(self, signal: str, reason: str, items: int) -> None:
        """``items`` of ``signal`` refused as a whole batch (``REJECT_REASONS``)."""

    def busy(self, reason: str) -> None:
        """A busy answer (``BUSY_REASONS``): the caller was told to retry."""

    def group_commit(self, events: int, inserted: int, seconds: float) -> None:
        """One group commit: ``events`` handed to the store, ``inserted`` of them new (the rest
        were duplicates), ``seconds`` spent in the insert and commit."""

    def checkpoint(self, outcome: str) -> None:
        """A checkpoint attempt: ``done``, ``skipped`` (a reader stayed open) or ``failed``."""

    def retention_run(self, outcome: str, deleted: int) -> None:
        """A retention pass: ``done`` (``deleted`` events) or ``failed``."""

    def sql_query(self, kind: str, outcome: str) -> None:
        """A user SQL statement (``unary`` or ``stream``) ended: ``ok``, ``busy``, ``invalid``,
        ``timeout``, ``too_large``, ``unavailable``, ``denied``, ``cancelled`` (the client left)
        or ``error``."""

    def firings(self, count: int) -> None:
        """``count`` new automation firings were stored."""

    def action_outcome(self, action_type: str, status: str) -> None:
        """An automation action run finished (``executed``, ``failed``, ``cancelled``, …)."""

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        """One webhook request: ``2xx``…``5xx`` by the answer's class, or ``timeout`` /
        ``error`` when there was none; ``seconds`` until the answer (or the failure)."""


class NoMetrics:
    """A ``SelfMetrics`` that keeps nothing (parts built without a server)."""

    def ingested(self, signal: str, received: int, rejected: int) -> None:
        pass

    def stored(self, signal: str, items: int) -> None:
        pass

    def refused(self, signal: str, reason: str, items: int) -> None:
        pass

    def busy(self, reason: str) -> None:
        pass

    def group_commit(self, events: int, inserted: int, seconds: float) -> None:
        pass

    def checkpoint(self, outcome: str) -> None:
        pass

    def retention_run(self, outcome: str, deleted: int) -> None:
        pass

    def sql_query(self, kind: str, outcome: str) -> None:
        pass

    def firings(self, count: int) -> None:
        pass

    def action_outcome(self, action_type: str, status: str) -> None:
        pass

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        pass
