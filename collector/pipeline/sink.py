"""``EventSink``: where the ingest steps hand validated event batches to be committed.

The receivers and the ingest classes depend on this interface, not on the store's writer:
``collector.store.writer.BatchWriter`` satisfies it today (one writer thread, group commit),
and a second storage backend only has to offer the same two calls. ``app.py`` builds the
concrete writer and passes it in.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

import pyarrow as pa

from collector.domain.columns import EventColumns


class EventSink(Protocol):
    """Commits batches of events; an answer means the batch is durable ("acknowledged means
    committed", SPEC §3).

    Both calls raise ``Busy`` at once when the sink's queue is full (retry later) and
    ``StoreError`` when it is stopped or the commit fails; a batch whose own data the store
    refuses fails with ``InvalidEvent``."""

    async def submit(self, columns: EventColumns) -> int:
        """Commit ``columns`` and return the rows inserted (a re-sent event is not counted)."""
        ...

    def submit_nowait(self, columns: EventColumns) -> Future[int]:
        """Queue ``columns`` now, in call order, and resolve to the rows inserted once they are
        committed (for producers that must keep their order without waiting)."""
        ...

    async def submit_table(self, table: pa.Table) -> int:
        """``submit`` for a batch already in the store's Arrow form (built in an OTLP mapping
        worker by the store's ``columns_to_arrow``, handed over as Arrow IPC)."""
        ...
