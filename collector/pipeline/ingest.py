"""``NativeIngest``: the ingest step for Prefect-shaped JSON events, shared by the native gRPC
and HTTP receivers: decode and validate (``collector.mapping.native``) → commit through an
``EventSink`` → report which items were refused. (OTLP's step is ``otlp_ingest.OtlpIngest``.)
"""

from __future__ import annotations

from typing import Any

from collector.clock import now_us
from collector.domain.columns import EventColumns
from collector.domain.events import Limits
from collector.domain.self_metrics import NoMetrics, SelfMetrics, reason_of
from collector.mapping.native import json_body_to_columns, json_events_to_columns
from collector.pipeline.sink import EventSink


class NativeIngest:
    """Takes Prefect-shaped JSON events, stores the valid ones, reports the invalid ones."""

    def __init__(
        self, sink: EventSink, limits: Limits, *, metrics: SelfMetrics | None = None
    ) -> None:
        self.sink = sink
        self.limits = limits
        self._metrics = metrics or NoMetrics()

    async def emit_json(self, body: bytes) -> tuple[int, list[tuple[int, str]]]:
        """Decode, validate and commit; returns (accepted, [(index, reason)]).

        Raises ``InvalidInput`` for an undecodable body and ``Busy`` when the queue is full.
        """
        columns, errors = json_body_to_columns(body, now_us(), self.limits)
        return await self._commit(columns, errors)

    async def emit_items(self, items: list[Any]) -> tuple[int, list[tuple[int, str]]]:
        """Validate and commit already-decoded events; returns (accepted, [(index, reason)])."""
        columns, errors = json_events_to_columns(items, now_us(), self.limits)
        return await self._commit(columns, errors)

    async def _commit(
        self, columns: EventColumns, errors: list[tuple[int, str]]
    ) -> tuple[int, list[tuple[int, str]]]:
        metrics = self._metrics
        metrics.ingested("events", len(columns) + len(errors), len(errors))
        try:
            accepted = await self.sink.submit(columns)
        except Exception as exc:
            metrics.refused("events", reason_of(exc), len(columns))
            raise
        metrics.stored("events", accepted)
        return accepted, errors
