"""The live tail's subscriber index: which subscribers may want which events of a batch.

Owns turning each subscriber's ``EventFilter`` into an index key — exact event names, event
name prefixes, primary resource ids or resource id prefixes, in that order of preference — and
finding, for a committed ``EventColumns`` batch, each subscriber's *candidate* rows by looking
the batch's ``names`` / ``resource_ids`` columns up once per distinct value (never once per
subscriber). A filter with none of those keys goes to the "check all" list, with a cheap
pre-check on the raw label JSON where its filter allows one.

Candidates are a superset of the matches: the hub confirms them with the filter's own
``includes`` (the one definition of what matches), except for subscribers whose whole filter
*is* the index key (``Entry.exact``), where the index answer is already exact. Every
pre-check here is a necessary condition, never a sufficient one, so it can only save work.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any, Generic, TypeVar

from collector.domain.columns import EventColumns
from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE
from collector.domain.filters import EventFilter, EventNameFilter
from collector.domain.matching import as_patterns, is_glob, split_negation

S = TypeVar("S", bound=Hashable)

NAME_MEMO_MAX = 10_000


# A shared-prefix key this short would occur almost everywhere; not worth a search.
MIN_KEY = 4
# Occurrences of a shared key checked one by one before each needle is searched on its own.
KEY_OCCURRENCES_MAX = 64

COLUMNS = ("resources", "related", "lower")


def _shared_length(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` without trailing digits (so that
    ``x.1`` / ``x.11`` / ``x.2`` share ``x.``, not ``x.1``)."""
    n = 0
    for ca, cb in zip(a, b, strict=False):
        if ca != cb:
            break
        n += 1
    while n and a[n - 1].isdigit():
        n -= 1
    return n


def shared_prefix_groups(needles: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Clusters of ``needles`` sharing a prefix of at least ``MIN_KEY`` characters: that
    prefix → its needles. A batch without the prefix has none of them — one search for the
    cluster instead of one per needle. Sorted needles are cut where the shared length of
    neighbours dips (lower than on either side), so ``a.x.1 a.x.2 a.y.1 a.y.2`` gives two
    clusters, not one under the common ``a.``."""
    ordered = sorted(set(needles))
    shared = [_shared_length(a, b) for a, b in pairwise(ordered)]
    groups: dict[str, tuple[str, ...]] = {}
    run: list[str] = ordered[:1]
    key_len = 0
    for i, h in enumerate(shared):
        dips = (
            h < MIN_KEY or (i and h < shared[i - 1]) or (i + 1 < len(shared) and h < shared[i + 1])
        )
        if dips:
            if len(run) > 1:
                groups[run[0][:key_len]] = tuple(run)
            run, key_len = [ordered[i + 1]], 0
        else:
            key_len = h if len(run) == 1 else min(key_len, h)
            run.append(ordered[i + 1])
    if len(run) > 1:
        groups[run[0][:key_len]] = tuple(run)
    return groups


class NeedlePlan:
    """What the check-all pre-checks of one index search for, per batch text (``resources``,
    ``related``, ``lower``): each needle that shares a prefix with others → that prefix and
    its cluster (see ``shared_prefix_groups``). Built once per index, read by every batch."""

    def __init__(self, needles: Mapping[str, Iterable[str]]) -> None:
        self.cluster_of: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
        for column, found in needles.items():
            by_needle: dict[str, tuple[str, tuple[str, ...]]] = {}
            for key, members in shared_prefix_groups(found).items():
                for needle in members:
                    by_needle[needle] = (key, members)
            self.cluster_of[column] = by_needle


NO_PLAN = NeedlePlan({})


class Batch:
    """A committed batch (or a slice of one) as the pre-checks read it: the columns, plus
    texts built once on first use and shared by every check-all subscriber — the
    ``resources`` and ``related`` JSON columns each joined into one string, and ``lower``:
    every row's raw text (name and the JSON of labels and payload) joined and lowercased in
    one go. Whether a needle occurs in a text, and in which rows of ``lower``, is memoized,
    so subscribers searching the same needle search once; needles the ``NeedlePlan``
    clusters under a shared prefix are ruled out together when the prefix is absent."""

    def __init__(self, cols: EventColumns, plan: NeedlePlan = NO_PLAN) -> None:
        self.cols = cols
        self.plan = plan
        self._joined: dict[str, str] = {}
        self._names: set[str] | None = None
        self._present: dict[str, dict[str, bool]] = {c: {} for c in COLUMNS}
        self._rows: dict[str, list[int]] = {}
        self._same_length = True
        self._starts: list[int] | None = None
        self._lower_rows: list[str] | None = None

    @property
    def distinct_names(self) -> set[str]:
        if self._names is None:
            self._names = set(self.cols.names)
        return self._names

    def _build_lower(self) -> str:
        c = self.cols
        raw = "\x01".join(
            map("\x00".join, zip(c.names, c.resources, c.related, c.payloads, strict=True))
        )
        text = raw.lower()  # one C-level pass instead of one call per row
        # str.lower maps no character to fewer than one, so an equal total length means every
        # character kept its length and offsets into the raw rows hold for ``text`` too. (Its
        # one context rule, Greek final sigma, only yields non-ASCII letters, and every text
        # needle is printable ASCII; the separators are not case-ignorable either.)
        self._same_length = len(text) == len(raw)
        return text

    def _row_starts(self) -> list[int] | None:
        """Start offset of each row in ``lower`` (plus the end), or None if lowering changed
        some row's length ("İ" → "i̇"); built only when some needle is in the batch."""
        if self._starts is None and self._same_length:
            c = self.cols
            lengths = map(
                lambda *parts: sum(map(len, parts)) + 4,  # 3 "\x00" and the "\x01" after
                c.names,
                c.resources,
                c.related,
                c.payloads,
            )
            self._starts = [0, *accumulate(lengths)]
        return self._starts

    def joined(self, column: str) -> str:
        """``resources``, ``related`` or ``lower`` (the lowercased row texts), all rows."""
        text = self._joined.get(column)
        if text is None:
            if column == "lower":
                text = self._build_lower()
            else:
                text = "\x01".join(getattr(self.cols, column))
            self._joined[column] = text
        return text

    def has(self, column: str, needle: str) -> bool:
        """Does ``needle`` occur anywhere in the batch text ``column``?"""
        known = self._present[column]
        found = known.get(needle)
        if found is None:
            cluster = self.plan.cluster_of.get(column, {}).get(needle)
            if cluster is None:
                found = known[needle] = needle in self.joined(column)
            else:
                self._resolve_cluster(column, *cluster)
                found = known[needle]
        return found

    def _resolve_cluster(self, column: str, key: str, members: tuple[str, ...]) -> None:
        text = self.joined(column)
        known = self._present[column]
        positions: list[int] = []
        at = text.find(key)
        while at >= 0 and len(positions) <= KEY_OCCURRENCES_MAX:
            positions.append(at)
            at = text.find(key, at + 1)
        if len(positions) > KEY_OCCURRENCES_MAX:  # a common prefix: search each needle
            for needle in members:
                known[needle] = needle in text
            return
        for needle in members:
            known[needle] = any(text.startswith(needle, p) for p in positions)

    def rows_with(self, needle: str) -> list[int]:
        """The rows whose lowercased text holds ``needle`` (printable ASCII), ascending."""
        rows = self._rows.get(needle)
        if rows is not None:
            return rows
        rows = []
        if self.has("lower", needle):
            starts = self._row_starts()
            if starts is None:
                if self._lower_rows is None:
                    c = self.cols
                    self._lower_rows = [
                        "\x00".join(parts).lower()
                        for parts in zip(c.names, c.resources, c.related, c.payloads, strict=True)
                    ]
                rows = [i for i, t in enumerate(self._lower_rows) if needle in t]
            else:
                # A needle never spans a row separator (it has no control characters), so
                # each hit lies in one row; after a hit the search resumes at the next row.
                text = self._joined["lower"]
                at = text.find(needle)
                while at >= 0:
                    row = bisect_right(starts, at) - 1
                    rows.append(row)
                    at = text.find(needle, starts[row + 1])
        self._rows[needle] = rows
        return rows


Groups = list[tuple[str, ...]]  # each group: one of its substrings must occur


def _all_groups(text: str, groups: Groups) -> bool:
    return all(any(m in text for m in group) for group in groups)


class Precheck:
    """Necessary conditions for one check-all filter: its event-name part (decided once per
    distinct name of a batch), substrings of the raw label JSON, and text-search terms in
    the lowercased raw text. ``rows`` gives the rows that pass them all."""

    def __init__(
        self,
        name_part: EventNameFilter | None,
        on_resource: Groups,
        on_related: Groups,
        on_either: Groups,
        include: tuple[str, ...],
        required: tuple[str, ...],
    ) -> None:
        self.name_part = name_part
        self.on_resource = on_resource
        self.on_related = on_related
        self.on_either = on_either
        self.include = include
        self.required = required
        # Event name → does the name part pass? Names repeat across batches; bounded.
        self._names: dict[str, bool] = {}

    def needles(self) -> dict[str, set[str]]:
        """Every substring this pre-check searches for, by batch text."""
        out: dict[str, set[str]] = {c: set() for c in COLUMNS}
        for group in self.on_resource:
            out["resources"].update(group)
        for group in self.on_related:
            out["related"].update(group)
        for group in self.on_either:
            out["resources"].update(group)
            out["related"].update(group)
        out["lower"].update(self.include + self.required)
        return out

    def _batch_may_match(self, batch: Batch) -> bool:
        has = batch.has
        for group in self.on_resource:
            if not any(has("resources", m) for m in group):
                return False
        for group in self.on_related:
            if not any(has("related", m) for m in group):
                return False
        for group in self.on_either:
            if not any(has("resources", m) or has("related", m) for m in group):
                return False
        if self.include and not any(has("lower", t) for t in self.include):
            return False
        return all(has("lower", t) for t in self.required)

    def _text_rows(self, batch: Batch) -> set[int] | None:
        """Rows holding some include term and every required term; None: no text part."""
        rows: set[int] | None = None
        if self.include:
            rows = set()
            for term in self.include:
                rows.update(batch.rows_with(term))
        for term in self.required:
            found = batch.rows_with(term)
            rows = set(found) if rows is None else rows.intersection(found)
        return rows

    def _row_may_match(self, batch: Batch, i: int) -> bool:
        cols = batch.cols
        if self.on_resource and not _all_groups(cols.resources[i], self.on_resource):
            return False
        if self.on_related and not _all_groups(cols.related[i], self.on_related):
            return False
        if self.on_either:
            a, b = cols.resources[i], cols.related[i]
            return all(any(m in a or m in b for m in g) for g in self.on_either)
        return True

    @property
    def _has_raw(self) -> bool:
        return bool(
            self.on_resource or self.on_related or self.on_either or self.include or self.required
        )

    def rows(self, batch: Batch) -> list[int]:
        names = batch.cols.names
        wanted: set[str] | None = None
        if self.name_part is not None:
            known = self._names
            if len(known) > NAME_MEMO_MAX:
                known.clear()
            wanted = set()
            for name in batch.distinct_names:
                ok = known.get(name)
                if ok is None:
                    ok = known[name] = self.name_part.includes({"event": name})
                if ok:
                    wanted.add(name)
            if not wanted:
                return []
        if self._has_raw and not self._batch_may_match(batch):
            return []
        indices: Sequence[int] = range(len(names))
        text_rows = self._text_rows(batch) if self.include or self.required else None
        if text_rows is not None:
            indices = sorted(text_rows)  # usually few: the rows holding the terms
        if wanted is not None and len(wanted) < len(batch.distinct_names):
            indices = [i for i in indices if names[i] in wanted]
        if not (self.on_resource or self.on_related or self.on_either):
            return list(indices)
        return [i for i in indices if self._row_may_match(batch, i)]


@dataclass(frozen=True, slots=True)
class IndexKey:
    """Where a subscriber is filed: ``kind`` is ``name``, ``name_prefix``, ``resource_id``,
    ``resource_id_prefix`` or ``all``; ``exact`` says the filter is nothing but this key."""

    kind: str
    values: tuple[str, ...] = ()
    exact: bool = False


def index_key(filter: EventFilter) -> IndexKey:
    """The most selective index key ``filter`` implies (a necessary condition of it)."""
    data = filter.to_json()
    data.pop("order", None)  # the order of a feed page means nothing to a live stream
    event = filter.event
    resource = filter.resource
    only_event = set(data) == {"event"}
    only_resource = set(data) == {"resource"}
    if event is not None and event.name:
        return IndexKey("name", tuple(event.name), only_event and set(data["event"]) == {"name"})
    if resource is not None and resource.id:
        exact = only_resource and set(data["resource"]) == {"id"}
        return IndexKey("resource_id", tuple(resource.id), exact)
    if event is not None and event.prefix:
        exact = only_event and set(data["event"]) == {"prefix"}
        return IndexKey("name_prefix", tuple(event.prefix), exact)
    if resource is not None and resource.id_prefix:
        exact = only_resource and set(data["resource"]) == {"id_prefix"}
        return IndexKey("resource_id_prefix", tuple(resource.id_prefix), exact)
    # A filter on the name alone is decided exactly by the check-all list's name pre-check.
    return IndexKey("all", (), not data or only_event)


# --------------------------------------------------------------------------- raw pre-checks


def _json_safe(text: str) -> bool:
    # Printable ASCII without `"`, `\` and `/`: written as itself by every JSON encoder the
    # mapping uses (the same rule as collector.domain.filters).
    return all(" " <= ch <= "~" and ch not in '"\\/' for ch in text)


def _members(key: str, expected: str | Sequence[str]) -> tuple[str, ...] | None:
    """Substrings one of which a stored label set's compact JSON holds if label ``key``
    matches ``expected`` — or None when some pattern gives no usable substring."""
    if not _json_safe(key):
        return None
    out: list[str] = []
    if any(not split_negation(p)[1] for p in as_patterns(expected)):
        return None  # an empty value: a missing id reads as "" in some paths
    for pattern in as_patterns(expected):
        negated, body = split_negation(pattern)
        if negated:
            return None
        if not is_glob(body):
            if not _json_safe(body):
                return None
            out.append(f'"{key}":"{body}"')
        elif body.endswith("*") and body[:-1] and not is_glob(body[:-1]) and _json_safe(body):
            out.append(f'"{key}":"{body[:-1]}')
        else:
            return None
    return tuple(out) or None


def _groups(spec: Mapping[str, Any]) -> list[tuple[str, ...]]:
    groups = []
    for key, expected in spec.items():
        members = _members(key, expected)
        if members:
            groups.append(members)
    return groups


def precheck(filter: EventFilter) -> Precheck | None:
    """Cheap necessary conditions of ``filter`` for the check-all list, or None if none.

    Each group is a set of substrings of which one must occur: labels of the primary resource
    in ``resources``, of a related resource in ``related``, of either for ``any_resource``."""
    on_resource: list[tuple[str, ...]] = []
    on_related: list[tuple[str, ...]] = []
    on_either: list[tuple[str, ...]] = []
    if filter.resource is not None:
        on_resource += _groups(filter.resource.labels or {})
    related = filter.related
    for part in related if isinstance(related, list) else [related] if related else []:
        spec: dict[str, Any] = dict(part.labels or {})
        if part.id:
            spec[RESOURCE_ID] = part.id
        if part.role:
            spec[RESOURCE_ROLE] = part.role
        on_related += _groups(spec)
    include: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    if filter.text is not None:
        # A term without spaces or characters JSON may escape lies inside the name, one
        # label value or the payload JSON, so it is in the row's lowercased raw text too.
        def usable(terms: tuple[str, ...]) -> tuple[str, ...]:
            lowered = tuple(t.lower() for t in terms)
            ok = all(" " not in t and _json_safe(t) for t in lowered)
            return lowered if ok else ()

        include = usable(filter.text.parsed.include)
        required = usable(filter.text.parsed.required)
    anyr = filter.any_resource
    for either in anyr if isinstance(anyr, list) else [anyr] if anyr else []:
        spec = dict(either.labels or {})
        if either.id:
            spec[RESOURCE_ID] = either.id
        elif either.id_prefix:
            spec[RESOURCE_ID] = [p + "*" for p in either.id_prefix]
        on_either += _groups(spec)
    name_part = filter.event
    if not (name_part or on_resource or on_related or on_either or include or required):
        return None
    return Precheck(name_part, on_resource, on_related, on_either, include, required)


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True, slots=True, eq=False)  # identity: a cheap, exact dict key
class Entry(Generic[S]):
    """One subscriber as filed in the index."""

    sub: S
    key: IndexKey
    precheck: Precheck | None


class _Lookup(Generic[S]):
    """Exact values and prefixes of one column → the entries filed under them."""

    def __init__(self) -> None:
        self.exact: dict[str, list[Entry[S]]] = {}
        self.prefixes: dict[str, list[Entry[S]]] = {}
        self.lengths: list[int] = []

    def add(self, entry: Entry[S], *, prefix: bool) -> None:
        table = self.prefixes if prefix else self.exact
        for value in dict.fromkeys(entry.key.values):  # a value listed twice files it once
            table.setdefault(value, []).append(entry)
        self.lengths = sorted({len(p) for p in self.prefixes})

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def entries_for(self, value: str) -> list[Entry[S]]:
        found = list(self.exact.get(value, ()))
        for n in self.lengths:
            if n > len(value):
                break
            hit = self.prefixes.get(value[:n])
            if hit:
                found += hit
        if len(found) > 1:
            found = list(dict.fromkeys(found))  # two prefixes of one entry both matching
        return found

    def candidates(self, column: list[str], out: dict[Entry[S], list[int]]) -> None:
        # One lookup per distinct value of the column; the rows are walked only when some
        # value has takers, so subscribers that want nothing in the batch cost nothing.
        hits: dict[str, list[Entry[S]]] = {}
        for value in set(column):
            entries = self.entries_for(value)
            if entries:
                hits[value] = entries
        if not hits:
            return
        for i, value in enumerate(column):
            takers = hits.get(value)
            if takers:
                for entry in takers:
                    rows = out.get(entry)
                    if rows is None:
                        out[entry] = [i]
                    else:
                        rows.append(i)


class TailIndex(Generic[S]):
    """An immutable index of subscribers; the hub builds a new one when they change."""

    def __init__(self, subs: Iterable[tuple[S, EventFilter]]) -> None:
        self.names: _Lookup[S] = _Lookup()
        self.resource_ids: _Lookup[S] = _Lookup()
        self.check_all: list[Entry[S]] = []
        self.entries: list[Entry[S]] = []
        for sub, filter in subs:
            key = index_key(filter)
            entry = Entry(sub, key, None if key.kind != "all" else precheck(filter))
            self.entries.append(entry)
            if key.kind in ("name", "name_prefix"):
                self.names.add(entry, prefix=key.kind == "name_prefix")
            elif key.kind in ("resource_id", "resource_id_prefix"):
                self.resource_ids.add(entry, prefix=key.kind == "resource_id_prefix")
            else:
                self.check_all.append(entry)
        needles: dict[str, set[str]] = {c: set() for c in COLUMNS}
        for entry in self.check_all:
            if entry.precheck is not None:
                for column, found in entry.precheck.needles().items():
                    needles[column] |= found
        self._plan = NeedlePlan(needles)

    def __len__(self) -> int:
        return len(self.entries)

    def candidates(self, cols: EventColumns) -> dict[Entry[S], list[int]]:
        """Each interested entry → the rows of ``cols`` it may want, in row (commit) order."""
        out: dict[Entry[S], list[int]] = {}
        if self.names:
            self.names.candidates(cols.names, out)
        if self.resource_ids:
            self.resource_ids.candidates(cols.resource_ids, out)
        n = len(cols)
        batch = Batch(cols, self._plan)
        for entry in self.check_all:
            check = entry.precheck
            if check is None:
                out[entry] = list(range(n))
            else:
                rows = check.rows(batch)
                if rows:
                    out[entry] = rows
        return out


__all__ = [
    "Batch",
    "Entry",
    "IndexKey",
    "NeedlePlan",
    "Precheck",
    "TailIndex",
    "index_key",
    "precheck",
    "shared_prefix_groups",
]
