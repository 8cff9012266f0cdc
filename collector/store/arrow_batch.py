"""The Arrow form of an event batch: what the writer inserts (``columns_to_arrow``), the
``received`` stamp put on it when it is queued (``stamp_received``), and ``ArrowColumns``,
the ``EventColumns`` view of a batch that arrived as Arrow (the commit listeners read it).

Kept apart from ``duckdb_store`` so that OTLP mapping worker processes
(``collector/pipeline/otlp_workers.py``) build batches with this very function without
importing DuckDB (~35 MB of RSS per process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import pyarrow as pa
import pyarrow.compute as pc

from collector.domain.columns import EventColumns
from collector.errors import InvalidEvent

T = TypeVar("T")

_TS = pa.timestamp("us", tz="UTC")

# Times the store can hand back: Python's datetime (every reader, the feed, automations) ends at
# year 9999, so an event beyond it could be stored but never read again.
MIN_OCCURRED_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_OCCURRED_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z

_JSON = pa.json_(pa.string())


def _json_array(texts: list[str]) -> pa.ExtensionArray:
    # Arrow's canonical JSON extension type lands in DuckDB as JSON without a re-parse.
    return pa.ExtensionArray.from_storage(_JSON, pa.array(texts, pa.string()))


def columns_to_arrow(cols: EventColumns, received_us: list[int]) -> pa.Table:
    """Build the Arrow table for ``cols`` without per-event Python objects.

    Raises ``InvalidEvent`` when a value cannot be stored (an ``occurred`` outside years
    1–9999, a value Arrow cannot convert): the batch's sender is at fault, not the store."""
    try:
        occurred = pa.array(cols.occurred_us, _TS)
        bounds = pc.min_max(occurred.cast(pa.int64()))
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is not None and (lo < MIN_OCCURRED_US or hi > MAX_OCCURRED_US):
            raise InvalidEvent(
                "an event's occurred time is outside the years 1-9999 the store can hold"
            )
        return _to_table(cols, occurred, received_us)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"the store cannot hold a value of this batch: {exc}") from None


def _to_table(cols: EventColumns, occurred: pa.Array, received_us: list[int]) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(cols.ids, pa.string()),
            occurred,
            pa.array(received_us, _TS),
            pa.array(cols.names, pa.string()),
            pa.array(cols.resource_ids, pa.string()),
            _json_array(cols.resources),
            _json_array(cols.related),
            _json_array(cols.payloads),
            pa.array(cols.follows, pa.string()),
        ],
        names=[
            "id",
            "occurred",
            "received",
            "event",
            "resource_id",
            "resource",
            "related",
            "payload",
            "follows",
        ],
    )


def stamp_received(table: pa.Table, received_us: int) -> pa.Table:
    """``table`` with every row's ``received`` set to ``received_us`` (the writer stamps a
    batch when it queues it: received order is commit order)."""
    i = table.schema.get_field_index("received")
    return table.set_column(i, "received", pa.repeat(pa.scalar(received_us, _TS), table.num_rows))


def _strings(column: str) -> Callable[[pa.Table], list[Any]]:
    def read(table: pa.Table) -> list[Any]:
        col = table.column(column)
        if isinstance(col.type, pa.ExtensionType):  # JSON text: read its string storage
            col = pa.chunked_array([c.storage for c in col.chunks], col.type.storage_type)
        out: list[Any] = col.to_pylist()
        return out

    return read


def _micros(table: pa.Table) -> list[int]:
    # Through numpy: Arrow's cast of a zoned timestamp then to_pylist is ~15x slower.
    out: list[int] = table.column("occurred").to_numpy().view("int64").tolist()
    return out


class _Lazy(Generic[T]):
    """A column of ``ArrowColumns``: read from the table into ``EventColumns``' own slot the
    first time it is asked for."""

    def __init__(self, name: str, read: Callable[[pa.Table], T]) -> None:
        self._slot = EventColumns.__dict__[name]  # the base class's storage for the column
        self._read = read

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Lazy[T]: ...

    @overload
    def __get__(self, obj: ArrowColumns, owner: type[Any]) -> T: ...

    def __get__(self, obj: ArrowColumns | None, owner: type[Any]) -> _Lazy[T] | T:
        if obj is None:
            return self
        try:
            value: T = self._slot.__get__(obj, EventColumns)
        except AttributeError:  # not read yet
            value = self._read(obj.table)
            self._slot.__set__(obj, value)
        return value

    def __set__(self, obj: ArrowColumns, value: T) -> None:
        self._slot.__set__(obj, value)


class ArrowColumns(EventColumns):
    """``EventColumns`` over a batch that arrived as an Arrow table (mapped in a worker).

    Commit listeners (live tail, automations) read columns of every committed batch; each
    column becomes a Python list only when first read, once: the automations read ids, names,
    times and follows of every event, labels and payloads only of the events they want."""

    __slots__ = ("table",)

    ids = _Lazy[list[str]]("ids", _strings("id"))
    occurred_us = _Lazy[list[int]]("occurred_us", _micros)
    names = _Lazy[list[str]]("names", _strings("event"))
    resource_ids = _Lazy[list[str]]("resource_ids", _strings("resource_id"))
    resources = _Lazy[list[str]]("resources", _strings("resource"))
    related = _Lazy[list[str]]("related", _strings("related"))
    payloads = _Lazy[list[str]]("payloads", _strings("payload"))
    follows = _Lazy[list[str | None]]("follows", _strings("follows"))

    def __init__(self, table: pa.Table) -> None:  # no super().__init__: columns are lazy
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)
