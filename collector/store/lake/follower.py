"""Other collectors' commits, announced: ``SnapshotFollower`` watches the lake's snapshots and
hands the events other collectors committed to the commit listeners (the live tail, the
automations), and ``LakeCommits`` is the lake backend's ``CommitNotices``: this collector's own
commits from its writer at once, the others' from the follower.

The follower asks the catalog for the newest snapshot id every
``storage.lake_follow_interval_seconds`` (one small catalog query; nothing else while the lake
is quiet) and, when it moved, reads the new snapshots' inserted rows
(``LakeStore.inserts_by_others``: DuckLake's change feed, or the rows by ``snapshot_id`` when a
compaction since would hide rows from the feed) — skipping snapshots this collector wrote (each
commit names its writer, ``LakeStore.writer_id``). Lag behind another collector's commit: the
interval plus one catalog round trip. Order: each collector's commits arrive in its commit
order; between collectors, in snapshot order as far as one poll sees — a local commit may be
announced before another collector's slightly older one that the next poll finds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from collector.domain.event_store import CommitListener
from collector.store.lake.lake_store import LakeStore
from collector.store.writer import BatchWriter

log = logging.getLogger(__name__)

# Polls in a row that fail to read the same new snapshots before they are skipped.
_SKIP_AFTER_FAILURES = 3


class SnapshotFollower:
    """A thread announcing other collectors' commits to its listeners (module docstring)."""

    def __init__(
        self,
        store: LakeStore,
        interval_seconds: float,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """``wanted``: whether any listener would use the events now (the live tail has
        subscribers); while it says no, new snapshots are passed over unread — reading the
        others' rows costs a scan of their new files, for nothing."""
        self._store = store
        self._interval = interval_seconds
        self._wanted = wanted
        self._listeners: list[CommitListener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Snapshots up to this one have been announced (or were there before we started).
        self._seen = 0
        self._failures = 0  # polls in a row that could not read the new snapshots

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    @property
    def seen_snapshot(self) -> int:
        return self._seen

    def start(self) -> None:
        """Announce what is committed from now on (the backfill of a new tail reads the
        store), in a thread of its own."""
        self._seen = self._store.current_snapshot()
        self._thread = threading.Thread(target=self._run, name="herald-lake-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as exc:
                # The catalog away for a moment: try again next time, from the same snapshot.
                log.warning("following the lake's snapshots failed: %s", exc)

    def poll(self) -> int:
        """Announce the snapshots committed since the last poll; returns the events announced."""
        newest = self._store.current_snapshot()
        if newest <= self._seen:
            return 0
        if not self._wanted():
            self._seen = newest
            return 0
        try:
            batches = self._store.inserts_by_others(self._seen, newest)
        except Exception:
            self._failures += 1
            if self._failures < _SKIP_AFTER_FAILURES:
                raise
            # The snapshots in between were expired (this collector fell far behind) or cannot
            # be read: the tail misses them rather than stopping for good.
            log.warning("skipping lake snapshots %d..%d: cannot read them", self._seen, newest)
            batches = []
        self._failures = 0
        self._seen = newest
        announced = 0
        for columns, received in batches:
            announced += len(columns)
            for listener in self._listeners:
                try:
                    listener(columns, received)
                except Exception:
                    log.exception("commit listener failed")
        return announced

    def stop(self) -> None:
        """End the thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class LakeCommits:
    """The lake backend's ``CommitNotices``: a listener hears this collector's commits from
    the writer (at once, on its thread) and every other collector's from the follower."""

    def __init__(self, writer: BatchWriter, follower: SnapshotFollower) -> None:
        self._writer = writer
        self._follower = follower

    def add_listener(self, listener: CommitListener) -> None:
        self._writer.add_listener(listener)
        self._follower.add_listener(listener)
