"""Retention: delete events older than ``retention_days`` (per-event-name overrides)."""

from __future__ import annotations

from datetime import datetime, timedelta

from collector.config import StorageConfig
from collector.store.duckdb_store import EventStore


def apply_retention(store: EventStore, config: StorageConfig, now: datetime) -> int:
    """Delete expired events (resource rows go with them: ``event_resources`` is a view)."""
    default_cutoff = now - timedelta(days=config.retention_days)
    overrides = {
        name: now - timedelta(days=days) for name, days in config.retention_overrides.items()
    }
    return store.delete_older_than(default_cutoff, overrides)
