"""The lake's upkeep: DuckLake's own maintenance calls, as jobs one collector runs on a
schedule (the automations leader, docs/scale-out.md; ``app.py`` schedules them).

Group commits make one Parquet file (and a few catalog rows) per commit: at 1,000 events per
commit, a million events are a thousand files, and every read lists and opens them. The jobs:

* ``merge_files`` — ``ducklake_merge_adjacent_files``: rewrites runs of small files of the
  events table into few large ones (new snapshot; the old files are scheduled for deletion).
  Costs one read and one write of the merged data; readers keep reading the old files.
* ``rewrite_deletes`` — ``ducklake_rewrite_data_files``: rewrites files that retention has
  deleted from (more than ``DELETE_THRESHOLD`` of their rows), dropping the deleted rows —
  how retention's space comes back. Costs a read and write of the affected files only.
* ``expire_snapshots`` — ``ducklake_expire_snapshots``: forgets snapshots older than
  ``storage.lake_snapshot_keep_seconds`` (catalog rows only; files they alone used become
  scheduled for deletion). A collector's live tail reads snapshots newer than its last poll, a
  second or so old: the window is far wider.
* ``cleanup_files`` — ``ducklake_cleanup_old_files``: deletes files scheduled for deletion more
  than the keep window ago (a query in flight may still read a file just replaced), and
  ``ducklake_delete_orphaned_files`` the Parquet files no snapshot names that are older than the
  window (written by a collector killed before its commit). Costs a directory listing and the
  deletes.

Each job is one DuckLake transaction; a conflict with a concurrent commit (retention deleting
from a file being merged) fails that job, which the next run does again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from collector.errors import StoreError
from collector.store.lake.lake_store import LAKE, LakeStore

log = logging.getLogger(__name__)

# A data file with more than this share of its rows deleted is rewritten without them.
DELETE_THRESHOLD = 0.1


@dataclass(slots=True)
class UpkeepReport:
    """What one ``run`` did: seconds per job, and the lake's data files before and after."""

    seconds: dict[str, float] = field(default_factory=dict)
    files_before: int = 0
    files_after: int = 0
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LakeStats:
    """The lake's size as upkeep sees it: live data files and delete files of all its tables,
    the catalog's snapshots, and the Parquet files under the data path (files scheduled for
    deletion and orphans included)."""

    data_files: int
    delete_files: int
    snapshots: int
    files_on_disk: int


class LakeUpkeep:
    """The upkeep jobs over one ``LakeStore`` (module docstring)."""

    def __init__(self, store: LakeStore, keep: timedelta) -> None:
        self._store = store
        self._keep = keep

    def _call(self, sql: str, params: list[object] | None = None) -> int:
        cur = self._store.cursor()
        try:
            return len(cur.execute(sql, params or []).fetchall())
        except duckdb.Error as exc:
            raise StoreError(f"lake upkeep failed: {str(exc).strip().splitlines()[0]}") from None
        finally:
            cur.close()

    def merge_files(self) -> int:
        """Merge adjacent small files; returns how many new files were written."""
        return self._call(f"CALL ducklake_merge_adjacent_files('{LAKE}')")

    def rewrite_deletes(self) -> int:
        """Rewrite files with many deleted rows; returns how many were rewritten."""
        return self._call(
            f"CALL ducklake_rewrite_data_files('{LAKE}', 'events', delete_threshold => ?)",
            [DELETE_THRESHOLD],
        )

    def expire_snapshots(self, now: datetime) -> int:
        """Expire snapshots older than the keep window; returns how many."""
        return self._call(
            f"CALL ducklake_expire_snapshots('{LAKE}', older_than => ?)", [now - self._keep]
        )

    def cleanup_files(self, now: datetime) -> int:
        """Delete files replaced or orphaned longer ago than the keep window; returns how many."""
        cutoff = now - self._keep
        deleted = self._call(
            f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => ?)", [cutoff]
        )
        deleted += self._call(
            f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => ?)", [cutoff]
        )
        return deleted

    def run(self, now: datetime) -> UpkeepReport:
        """Every job once, in order (merge, rewrite, expire, clean up); a job that fails is
        logged and the others still run."""
        report = UpkeepReport(files_before=self.stats().data_files)
        jobs: dict[str, Callable[[], int]] = {
            "merge_files": self.merge_files,
            "rewrite_deletes": self.rewrite_deletes,
            "expire_snapshots": lambda: self.expire_snapshots(now),
            "cleanup_files": lambda: self.cleanup_files(now),
        }
        for name, job in jobs.items():
            started = time.monotonic()
            try:
                job()
            except StoreError as exc:
                report.errors[name] = str(exc)
                log.warning("lake upkeep: %s failed: %s", name, exc)
            report.seconds[name] = time.monotonic() - started
        report.files_after = self.stats().data_files
        return report

    def stats(self) -> LakeStats:
        """Counts from the catalog (``ducklake_table_info``, ``ducklake_snapshots``) and of
        the files under the data path."""
        cur = self._store.cursor()
        try:
            row = cur.execute(
                "SELECT coalesce(sum(file_count), 0), coalesce(sum(delete_file_count), 0) "
                f"FROM ducklake_table_info('{LAKE}')"
            ).fetchone()
            snaps = cur.execute(f"SELECT count(*) FROM ducklake_snapshots('{LAKE}')").fetchone()
        except duckdb.Error as exc:
            raise StoreError(f"lake stats failed: {str(exc).strip().splitlines()[0]}") from None
        finally:
            cur.close()
        on_disk = sum(1 for p in _walk(self._store.location.data_path) if p.endswith(".parquet"))
        return LakeStats(
            data_files=int(row[0]) if row else 0,
            delete_files=int(row[1]) if row else 0,
            snapshots=int(snaps[0]) if snaps else 0,
            files_on_disk=on_disk,
        )


def _walk(root: str) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names]
