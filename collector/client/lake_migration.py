"""``herald store migrate --to-ducklake``'s work, for the CLI (which reaches the store only
through this package): the store file's events copied into a lake by
``collector.store.lake.migrate`` — idempotent, so a run that stopped is run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from collector.store.lake.lake_store import LakeLocation
from collector.store.lake.migrate import Migration, migrate_to_lake


def migrate_file_to_lake(
    db_path: str | Path,
    catalog: str,
    data_path: str,
    progress: Callable[[int, int], None] | None = None,
) -> Migration:
    """Copy the events of the Herald store file ``db_path`` into the lake of ``catalog`` (as
    ``storage.catalog`` takes it) and ``data_path``; ``StoreError`` when either fails."""
    return migrate_to_lake(db_path, LakeLocation.parse(catalog, data_path), progress=progress)


__all__ = ["Migration", "migrate_file_to_lake"]
