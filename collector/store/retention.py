"""Retention: delete events older than ``retention_days`` (per-event-name overrides).

The work is cut into bounded slices (``SLICE_ROWS`` events, one short DELETE each) so that the
server can run them on its one writer thread between group commits: ingest waits for at most
one slice, never for the whole purge. Space comes back at the next checkpoint, which the writer
runs when no reader is open (``EventStore.checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.config import StorageConfig
from collector.domain.event_store import EventLog

# Measured (DuckDB 1.4.4, 1M events, half expired): a 50k-row slice takes under 0.1 s.
SLICE_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The cutoffs of one retention pass, fixed at its start."""

    default_cutoff: datetime
    overrides: dict[str, datetime]
    slice_rows: int = SLICE_ROWS

    @classmethod
    def at(
        cls, config: StorageConfig, now: datetime, slice_rows: int = SLICE_ROWS
    ) -> RetentionPlan:
        return cls(
            default_cutoff=now - timedelta(days=config.retention_days),
            overrides={
                name: now - timedelta(days=days)
                for name, days in config.retention_overrides.items()
            },
            slice_rows=slice_rows,
        )

    def delete_slice(self, store: EventLog) -> int:
        """Delete one slice; fewer than ``slice_rows`` deleted means the pass is done."""
        return store.delete_expired(self.default_cutoff, self.overrides, self.slice_rows)


def apply_retention(store: EventLog, config: StorageConfig, now: datetime) -> int:
    """Delete every expired event, slice by slice, then checkpoint (offline use and tests; the
    server runs the slices through its writer). Resource rows go with their events
    (``event_resources`` is a view)."""
    plan = RetentionPlan.at(config, now)
    deleted = 0
    while True:
        n = plan.delete_slice(store)
        deleted += n
        if n < plan.slice_rows:
            break
    if deleted:
        store.checkpoint()
    return deleted
