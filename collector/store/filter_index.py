"""The label-set side table (``herald_label_sets``; ``schema.py`` version 3): what a commit of
events writes into it, and what retention deletes from it. Both backends (``duckdb_store.py``,
``lake/lake_store.py``) run these statements inside the transaction of the events they go with.
The events' own filter keys (``resource_key``, ``related_*_keys``) are columns that the events
``INSERT`` fills, so dedupe and retention need nothing more for them.

``herald_label_sets`` has each distinct ``resource`` text, keyed by ``hash()`` of the text
(``events.resource_key``). A commit inserts only the texts of its batch that this process has
not written lately: ``LabelSetCache`` remembers them (bounded, and each entry for
``CACHE_SECONDS`` only). Duplicates in the table are harmless — filters semi-join on the key —
so several processes (lake collectors) need not coordinate. Retention prunes sets no event
refers to any more, but only those written more than ``PRUNE_AFTER`` ago (far longer than a
cache entry lives), so a set that some process still believes written is never pruned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from collector.store.schema import INDEX_UNINDEXED_EVENTS

# How many label-set texts a process remembers as written, and for how long.
CACHE_ENTRIES = 20_000
CACHE_SECONDS = 600.0
# Retention prunes unreferenced label sets only once they are this old (see the docstring).
PRUNE_AFTER = timedelta(hours=1)

# ``new_label_sets`` is an Arrow table of one VARCHAR column ``resource``; its hash is the events'
# ``hash(resource::VARCHAR)``: the same text, the same function. (A list parameter instead costs
# far more: 12 ms vs ~2 ms for 54 texts, measured, in DuckDB's conversion of Python values.)
# ``new_label_sets.resource`` arrives as Arrow's JSON extension type (as ``events.resource``
# does): DuckDB takes it as JSON without parsing it again — a ``::JSON`` cast here cost
# ~1–1.6 ms per 1,000 new sets. The key is the same ``hash`` of the text the events' insert takes.
LABEL_SETS_INSERT_SQL = (
    "INSERT INTO herald_label_sets SELECT hash(resource::VARCHAR), resource, now() "
    "FROM new_label_sets"
)
_JSON = pa.json_(pa.string())


class LabelSetCache:
    """The label-set texts this process wrote lately (``CACHE_ENTRIES`` at most, each for
    ``CACHE_SECONDS``): a batch whose sets are all here writes nothing to the side table.

    Written only by the thread that commits (under the store's write lock); ``remember``
    only after the commit succeeded, so a rolled-back set is written again next time."""

    def __init__(self, entries: int = CACHE_ENTRIES, seconds: float = CACHE_SECONDS) -> None:
        self._entries = entries
        self._seconds = seconds
        self._written: dict[str, float] = {}  # text -> when, oldest first

    def missing(self, texts: list[str]) -> list[str]:
        """Those of ``texts`` (distinct) not known to be written."""
        deadline = time.monotonic() - self._seconds
        written = self._written
        return [t for t in texts if written.get(t, deadline) <= deadline]

    def remember(self, texts: list[str]) -> None:
        now = time.monotonic()
        written = self._written
        for text in texts:
            written.pop(text, None)  # re-inserted at the end: the newest
            written[text] = now
        excess = len(written) - self._entries
        if excess > 0:
            for text in list(written)[:excess]:
                del written[text]


def _storage(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # The JSON extension type's strings (compute functions take the storage type).
    return pa.chunked_array(
        [c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks],
        pa.string(),
    )


def write_label_sets(
    cur: duckdb.DuckDBPyConnection, batch: pa.Table, cache: LabelSetCache
) -> list[str]:
    """The label sets of ``batch`` that ``cache`` does not know as written, inserted inside
    the transaction open on ``cur``; returns them, for ``cache.remember`` once the transaction
    has committed."""
    texts = pc.unique(_storage(batch.column("resource"))).to_pylist()
    new = cache.missing([t for t in texts if t is not None])
    if new:
        texts_json = pa.ExtensionArray.from_storage(_JSON, pa.array(new, pa.string()))
        cur.register("new_label_sets", pa.table({"resource": texts_json}))
        try:
            cur.execute(LABEL_SETS_INSERT_SQL)
        finally:
            cur.unregister("new_label_sets")
    return new


def expired_delete_sql(
    default_cutoff: datetime, overrides: Mapping[str, datetime], max_rows: int
) -> tuple[str, dict[str, Any]]:
    """Retention's statement: delete at most ``max_rows`` events older than their cutoff
    (``overrides`` per event name, ``default_cutoff`` for the rest), with its parameters."""
    names: Sequence[str] = list(overrides)
    # The outer bound lets zone maps skip every row group newer than all cutoffs.
    horizon = max([default_cutoff, *overrides.values()])
    expired = ["(occurred < $default AND NOT list_contains($names, event))"]
    params: dict[str, Any] = {
        "default": default_cutoff,
        "names": names,
        "horizon": horizon,
        "n": max_rows,
    }
    for i, (name, cutoff) in enumerate(overrides.items()):
        expired.append(f"(event = $name{i} AND occurred < $cutoff{i})")
        params[f"name{i}"], params[f"cutoff{i}"] = name, cutoff
    sql = (
        "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events "
        f"WHERE occurred < $horizon AND ({' OR '.join(expired)}) LIMIT $n)"
    )
    return sql, params


def delete_expired(
    cur: duckdb.DuckDBPyConnection,
    default_cutoff: datetime,
    overrides: Mapping[str, datetime],
    max_rows: int,
) -> int:
    """Retention, one slice, inside the caller's transaction: delete at most ``max_rows``
    expired events (``expired_delete_sql``); the slice that ends a pass (fewer than
    ``max_rows``) also prunes the label sets left unreferenced. Both backends run it."""
    sql, params = expired_delete_sql(default_cutoff, overrides, max_rows)
    row = cur.execute(sql, params).fetchone()
    deleted = int(row[0]) if row else 0
    if 0 < deleted < max_rows:
        prune_label_sets(cur)
    return deleted


def index_unindexed_events(cur: duckdb.DuckDBPyConnection) -> None:
    """Give the events written by plain SQL (benchmarks and tests build stores that way; the
    writer never leaves an event unindexed) their filter keys and label sets, as the migration
    that added them did for the events stored then."""
    for sql in INDEX_UNINDEXED_EVENTS:
        cur.execute(sql)


def prune_label_sets(cur: duckdb.DuckDBPyConnection) -> int:
    """Delete the label sets written more than ``PRUNE_AFTER`` ago that no stored event refers
    to; returns how many went."""
    # The referenced keys are looked for among the old sets' keys only: an anti-join against
    # all of ``events`` would hash every event's key.
    old = "added < now() - $after"
    row = cur.execute(
        f"DELETE FROM herald_label_sets WHERE {old} AND key NOT IN ("
        "SELECT DISTINCT resource_key FROM events WHERE resource_key IN "
        f"(SELECT key FROM herald_label_sets WHERE {old}))",
        {"after": PRUNE_AFTER},
    ).fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "LABEL_SETS_INSERT_SQL",
    "LabelSetCache",
    "delete_expired",
    "expired_delete_sql",
    "index_unindexed_events",
    "prune_label_sets",
    "write_label_sets",
]
