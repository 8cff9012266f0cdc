"""The filters' side tables (``herald_label_sets``, ``herald_related``; ``schema.py`` version 3):
what a commit of events writes into them, and what retention deletes from them. Both backends
(``duckdb_store.py``, ``lake/lake_store.py``) run these statements inside the transaction of
the events they go with, so the side tables never drift from ``events``.

* ``herald_related``: one row per related item of every *inserted* event — computed by DuckDB
  from the batch's ``related`` JSON, with the events ``INSERT``'s own dedupe anti-join, so a
  re-sent event (skipped) adds nothing. Retention deletes an event's rows with it.
* ``herald_label_sets``: each distinct ``resource`` text once, keyed by ``hash()`` of the text
  (``events.resource_key``). A commit inserts only the texts of its batch that this process
  has not written lately: ``LabelSetCache`` remembers them (bounded, and each entry for
  ``CACHE_SECONDS`` only). Duplicates in the table are harmless — filters semi-join on the
  key — so several processes (lake collectors) need not coordinate. Retention prunes sets no
  event refers to any more, but only those written before ``PRUNE_AFTER`` (far longer than a
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

from collector.store.schema import INDEX_UNINDEXED_EVENTS, RELATED_ITEMS_SQL

# How many label-set texts a process remembers as written, and for how long.
CACHE_ENTRIES = 20_000
CACHE_SECONDS = 600.0
# Retention prunes unreferenced label sets only once they are this old (see the docstring).
PRUNE_AFTER = timedelta(hours=1)

# The batch's related items, for the events the events ``INSERT`` (``duckdb_store.INSERT_SQL``)
# will insert: the same anti-join, evaluated before it in the same transaction.
RELATED_INSERT_SQL = "INSERT INTO herald_related " + RELATED_ITEMS_SQL.format(
    occurred="occurred",
    event_id="id::UUID",
    related="related",
    source="batch WHERE related::VARCHAR <> '[]' AND id::UUID NOT IN "
    "(SELECT id FROM events WHERE occurred BETWEEN $lo AND $hi)",
)
# ``new_label_sets`` is an Arrow table of one VARCHAR column ``resource``; its hash is the
# events' ``hash(resource::VARCHAR)``: the same text, the same function.
LABEL_SETS_INSERT_SQL = (
    "INSERT INTO herald_label_sets SELECT hash(resource), resource::JSON, now() FROM new_label_sets"
)


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

    def clear(self) -> None:
        self._written.clear()


def _storage(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # The JSON extension type's strings (compute functions take the storage type).
    return pa.chunked_array(
        [c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks],
        pa.string(),
    )


def write_side_tables(
    cur: duckdb.DuckDBPyConnection,
    batch: pa.Table,
    params: dict[str, Any],
    cache: LabelSetCache,
) -> list[str]:
    """The side rows of ``batch`` (registered as ``batch`` on ``cur``, inside the transaction,
    *before* the events ``INSERT``; ``params`` are its ``lo``/``hi``). Returns the label-set
    texts written, for ``cache.remember`` once the transaction has committed."""
    related = _storage(batch.column("related"))
    if pc.any(pc.not_equal(related, "[]")).as_py():
        cur.execute(RELATED_INSERT_SQL, params)
    texts = pc.unique(_storage(batch.column("resource"))).to_pylist()
    new = cache.missing([t for t in texts if t is not None])
    if new:
        cur.register("new_label_sets", pa.table({"resource": pa.array(new, pa.string())}))
        try:
            cur.execute(LABEL_SETS_INSERT_SQL)
        finally:
            cur.unregister("new_label_sets")
    return new


def first_of_each_id(batch: pa.Table) -> pa.Table:
    """``batch`` without its repeated ids (the first row of each id kept, order kept), so that
    the events and their side rows are taken from the same rows."""
    if pc.count_distinct(batch.column("id")).as_py() == batch.num_rows:
        return batch
    numbered = batch.append_column("__row", pa.array(range(batch.num_rows), pa.int64()))
    first = numbered.group_by("id", use_threads=False).aggregate([("__row", "min")])
    rows = first.column("__row_min")
    return batch.take(pc.take(rows, pc.sort_indices(rows)))


def expired_rows_sql(
    default_cutoff: datetime, overrides: Mapping[str, datetime], max_rows: int
) -> tuple[str, dict[str, Any]]:
    """Retention's selection: at most ``max_rows`` events (``rid`` = rowid, ``id``,
    ``occurred``) older than their cutoff (``overrides`` per event name, ``default_cutoff`` for
    the rest), with its parameters."""
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
        "SELECT rowid AS rid, id, occurred FROM events "
        f"WHERE occurred < $horizon AND ({' OR '.join(expired)}) LIMIT $n"
    )
    return sql, params


def delete_expired(
    cur: duckdb.DuckDBPyConnection,
    default_cutoff: datetime,
    overrides: Mapping[str, datetime],
    max_rows: int,
) -> int:
    """Retention, one slice, inside the caller's transaction: delete at most ``max_rows``
    expired events (``expired_rows_sql``) with their related rows; the slice that ends a pass
    (fewer than ``max_rows``) also prunes the label sets left unreferenced. Both backends run
    it."""
    sql, params = expired_rows_sql(default_cutoff, overrides, max_rows)
    deleted = delete_events(cur, sql, params)
    if 0 < deleted < max_rows:
        prune_label_sets(cur)
    return deleted


def delete_events(cur: duckdb.DuckDBPyConnection, doomed_sql: str, params: dict[str, Any]) -> int:
    """Delete the events ``doomed_sql`` selects (``rowid, id, occurred``) and their related
    rows, inside the caller's transaction; returns how many events went."""
    doomed = cur.execute(doomed_sql, params).fetch_arrow_table()
    if doomed.num_rows == 0:
        return 0
    bounds = pc.min_max(doomed.column("occurred"))
    cur.register("doomed", doomed)
    try:
        cur.execute(
            "DELETE FROM herald_related WHERE occurred BETWEEN $lo AND $hi "
            "AND event_id IN (SELECT id::UUID FROM doomed)",
            {"lo": bounds["min"].as_py(), "hi": bounds["max"].as_py()},
        )
        row = cur.execute(
            "DELETE FROM events WHERE occurred <= $hi AND rowid IN (SELECT rid FROM doomed)",
            {"hi": bounds["max"].as_py()},
        ).fetchone()
    finally:
        cur.unregister("doomed")
    return int(row[0]) if row else 0


def index_unindexed_events(cur: duckdb.DuckDBPyConnection) -> None:
    """Give the events written by plain SQL (benchmarks and tests build stores that way; the
    writer never leaves an event unindexed) their ``resource_key`` and side rows, as the
    migration that added them did for the events stored then."""
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
    "RELATED_INSERT_SQL",
    "LabelSetCache",
    "delete_events",
    "delete_expired",
    "expired_rows_sql",
    "first_of_each_id",
    "index_unindexed_events",
    "prune_label_sets",
    "write_side_tables",
]
