"""The DuckDB SQL of an ``EventFilter`` (``collector.domain.filters``): ``filter_sql(f)`` is a
``WHERE`` fragment over ``events`` aliased ``e`` with its ``?`` parameters, equivalent to the
filter's in-memory ``includes()`` (tests/unit/test_filters.py runs both on the same events).

Owns DuckDB's JSON dialect for filters, so the domain keeps the filter model and its meaning and
a second storage backend writes its own twin of this module. User values, label keys included,
only ever travel as ``?`` parameters, never inside the SQL text.

Labels are stored as DuckDB ``JSON`` text (``collector.store.schema``; MAP columns were
measured several times slower to insert and dropped) and read with ``labels ->> '$."key"'``.
That text is compact JSON as orjson writes it (``collector.mapping`` builds some of it by hand
in the same form): no whitespace, only ``"``, ``\\`` and control characters escaped. So a label
``key`` = ``value`` appears in it as ``"key":"value"``, and a text-search term as itself; the
SQL tests such substrings first, as cheap necessary conditions, before parsing any JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE
from collector.domain.filters import (
    EventAnyResourceFilter,
    EventFilter,
    EventIDFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
    EventResourceFilter,
    EventTextFilter,
    FilterPart,
)
from collector.domain.matching import as_patterns, is_glob, pattern_to_like, split_negation
from collector.store.schema import PAIR_KEY_SQL

Sql = tuple[str, list[Any]]
TRUE_SQL: Sql = ("TRUE", [])

# --------------------------------------------------------------------------- label SQL


def _json_path(key: str) -> str:
    # A quoted member path, so keys with dots, `$` or `/` are taken literally.
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def label_sql(labels: str, key: str) -> Sql:
    """The label ``key`` of the label set ``labels`` (``e.resource`` or ``r``, one related
    item) as a VARCHAR expression with its parameters; NULL when the label is missing."""
    return f"({labels} ->> ?)", [_json_path(key)]


# The related resources as a list DuckDB's list lambdas can walk.
RELATED_ITEMS = "CAST(e.related AS JSON[])"

# The SQL twin of text_search.searchable_text (lowercased). concat_ws over the four parts
# measured ~25% faster than one list_concat + array_to_string (775 ms vs 1,050 ms per 1M
# events); a text search over whole rows is a full scan either way.
SEARCHABLE_SQL = (
    "lower(concat_ws(' ', e.event, "
    "array_to_string(json_extract_string(e.resource, '$.*'), ' '), "
    "array_to_string(json_extract_string(e.related, '$[*].*'), ' '), "
    "e.payload::VARCHAR))"
)


def _json_safe(text: str) -> bool:
    """True if JSON encoders write ``text`` as itself: printable ASCII without ``"``, ``\\``
    and ``/`` (orjson escapes only ``"``, ``\\`` and control characters; others may escape
    ``/`` or non-ASCII characters too)."""
    return all(" " <= ch <= "~" and ch not in '"\\/' for ch in text)


def _member(key: str, value: str, *, prefix: bool = False) -> str | None:
    """The text ``"key":"value"`` (``"key":"prefix`` for a prefix) that a stored label set
    holding that label must contain, or None if one of them may be escaped.

    Relies on the stored form of label sets: compact JSON, as orjson writes it and as
    ``collector.mapping`` builds it by hand — no whitespace around ``:``."""
    if not (_json_safe(key) and _json_safe(value)):
        return None
    return f'"{key}":"{value}' if prefix else f'"{key}":"{value}"'


def _hint_group(texts: list[str | None]) -> list[str]:
    # A group is usable only if every alternative has a reliable substring.
    return [t for t in texts if t is not None] if texts and None not in texts else []


def _substring_hint(column: str, groups: list[list[str]]) -> Sql | None:
    """A necessary condition on the raw JSON text of ``column``: for each group, one of its
    substrings occurs in it (so ``contains`` rejects most rows before any JSON is parsed)."""
    groups = [g for g in groups if g]
    if not groups:
        return None
    clauses = [_any_of([f"contains({column}, ?)"] * len(g)) for g in groups]
    return _all_of(clauses), [text for g in groups for text in g]


# --------------------------------------------------------------------------- SQL building


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _any_of(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")"


def _all_of(clauses: list[str]) -> str:
    if not clauses:
        return "TRUE"
    return clauses[0] if len(clauses) == 1 else "(" + " AND ".join(clauses) + ")"


def _patterns_sql(value: Sql, expected: str | Sequence[str]) -> Sql:
    """One label's patterns (ORed) against ``value``, a VARCHAR expression with its own
    parameters that is NULL when the label is missing. NULL never satisfies ``=``, ``<>``,
    ``LIKE`` or ``NOT LIKE``: exactly "a missing label never matches, negated or not" — as long
    as the fragment is never put under NOT, which nothing here does."""
    expr, expr_params = value
    patterns = as_patterns(expected)
    if not patterns:
        return ("FALSE", [])  # an empty value list matches nothing (P§4.2)
    equal: list[str] = []
    clauses: list[str] = []
    params: list[Any] = []
    for pattern in patterns:
        negated, body = split_negation(pattern)
        if is_glob(body):
            clauses.append(f"{expr} {'NOT LIKE' if negated else 'LIKE'} ? ESCAPE '\\'")
            params += [*expr_params, pattern_to_like(body)]
        elif negated:
            clauses.append(f"{expr} <> ?")
            params += [*expr_params, body]
        else:
            equal.append(body)
    if equal:
        # Plain values first: `= ?` / `IN (…)` are the cheapest and the most common.
        head = f"{expr} = ?" if len(equal) == 1 else f"{expr} IN ({_placeholders(len(equal))})"
        clauses.insert(0, head)
        params[:0] = [*expr_params, *equal]
    return _any_of(clauses), params


def _in_sql(value: Sql, values: Sequence[str]) -> Sql:
    expr, expr_params = value
    if len(values) == 1:
        return f"{expr} = ?", [*expr_params, values[0]]
    return f"{expr} IN ({_placeholders(len(values))})", [*expr_params, *values]


def _prefix_sql(value: Sql, prefixes: Sequence[str]) -> Sql:
    # starts_with(x, ?) beats `x LIKE ?` with a parameter (4 ms vs 8 ms per 1M rows).
    expr, expr_params = value
    clauses = [f"starts_with({expr}, ?)"] * len(prefixes)
    params: list[Any] = []
    for prefix in prefixes:
        params += [*expr_params, prefix]
    return _any_of(clauses), params


def _label_members(label: str, expected: str | Sequence[str]) -> list[str]:
    """The member texts (``"key":"value"``, ``"key":"prefix``) one of which a label set's JSON
    text holds if ``label`` matches ``expected``; empty unless every pattern is a plain value or
    a ``prefix*`` that JSON writes as itself."""
    texts: list[str | None] = []
    for pattern in as_patterns(expected):
        negated, body = split_negation(pattern)
        if not negated and not is_glob(body):
            texts.append(_member(label, body))
        elif not negated and body.endswith("*") and body[:-1] and not is_glob(body[:-1]):
            texts.append(_member(label, body[:-1], prefix=True))
        else:
            texts.append(None)
    return _hint_group(texts)


def _members_sql(column: str, members: list[str]) -> Sql:
    """Exactly "the label set stored in ``column`` has one of these members", for members from
    ``_label_members`` (``"key":"value"`` or ``"key":"prefix``).

    In compact JSON a member starts right after ``{`` or ``,``, and a ``{"`` or ``,"`` followed
    by a key and ``":`` cannot occur inside a string (a quote there is escaped, and a closing
    quote is followed by ``,``, ``}`` or ``:``). So for a flat object of strings with distinct
    keys — every stored label set — ``{"key":"value"`` or ``,"key":"value"`` occurs in the text
    exactly when ``key`` = ``value``; no JSON is parsed. Measured on 1M events, ``count(*)``
    of name prefix + one label: 44 ms (substring pre-check, then ``->>``) → 35 ms."""
    texts = [start + member for member in members for start in ("{", ",")]
    return _any_of([f"contains({column}, ?)"] * len(texts)), texts


def _spec_sql(
    spec: Mapping[str, str | Sequence[str]],
    labels: str,
    id_column: str | None = None,
    *,
    stored: bool = False,
) -> Sql:
    """A ResourceSpecification against the label set ``labels``.

    ``id_column`` is a non-null column equal to the set's ``prefect.resource.id`` (the
    primary's ``resource_id``), which DuckDB reads much faster than a label lookup, so those
    labels are tested first. ``stored`` says ``labels`` is a stored JSON column (not an item of
    a list): labels whose patterns are all plain values or ``prefix*`` are then tested on its
    raw text (``_members_sql``), the rest with ``->>``."""
    first: list[Sql] = []
    rest: list[Sql] = []
    for label, expected in spec.items():
        if label == RESOURCE_ID and id_column is not None:
            first.append(_patterns_sql((id_column, []), expected))
            continue
        members = _label_members(label, expected) if stored else []
        if members:
            first.append(_members_sql(labels, members))
        else:
            rest.append(_patterns_sql(label_sql(labels, label), expected))
    parts = first + rest
    return _all_of([p[0] for p in parts]), [x for p in parts for x in p[1]]


def _label_set_sql(spec: Mapping[str, str | Sequence[str]]) -> Sql:
    """A ResourceSpecification against the primary resource, through the label-set side table
    (``store/filter_index.py``): ``prefect.resource.id`` on ``e.resource_id``, the other labels
    on the distinct label sets, which ``events`` then semi-joins on its integer
    ``resource_key`` — so no event's ``resource`` JSON is read. Measured at 10M events,
    ``count(*)`` of name prefix + one label: ~2,000 → ~380 ms on a loaded machine."""
    parts: list[Sql] = []
    rest = {label: expected for label, expected in spec.items() if label != RESOURCE_ID}
    if RESOURCE_ID in spec:
        parts.append(_patterns_sql(("e.resource_id", []), spec[RESOURCE_ID]))
    if rest:
        sql, params = _spec_sql(rest, "s.resource", stored=True)
        parts.append(
            (f"e.resource_key IN (SELECT s.key FROM herald_label_sets s WHERE {sql})", params)
        )
    return _all_of([p[0] for p in parts]), [x for p in parts for x in p[1]]


def _related_keys_sql(f: EventRelatedFilter) -> Sql | None:
    """The related filter's ids, roles and (id, role) pairs through the events' key lists
    (``schema.py`` version 3): one ``list_contains`` per wanted key over integers, never the
    ``related`` JSON. An item must have all of them, so with roles or pairs the keys are those
    of the (role, id) pairs the filter allows (ids × roles, or its pairs that agree with its
    ids and roles), else of the ids alone. None for roles alone (no key; the JSON answers) or
    labels alone. Measured at 10M events, the count of role + id: ~7.4 s → ~0.7 s on a loaded
    machine (~970 → ~150 ms quiet)."""
    ids = list(dict.fromkeys(f.id or []))
    roles = list(dict.fromkeys(f.role or []))
    if f.resources_in_roles:
        pairs = [
            (i, r)
            for i, r in dict.fromkeys((i, r) for i, r in f.resources_in_roles)
            if (not ids or i in ids) and (not roles or r in roles)
        ]
    elif ids and roles:
        pairs = [(i, r) for i in ids for r in roles]
    elif ids:
        key = "list_contains(e.related_id_keys, hash(?::VARCHAR))"
        return _any_of([key] * len(ids)), ids
    else:
        return None
    if not pairs:
        return "FALSE", []
    pair_key = PAIR_KEY_SQL.format(role="?::VARCHAR", id="?::VARCHAR")
    key = f"list_contains(e.related_pair_keys, {pair_key})"
    return _any_of([key] * len(pairs)), [x for i, r in pairs for x in (r, r, i)]


def _spec_members(spec: Mapping[str, str | Sequence[str]]) -> list[list[str]]:
    """Per label of ``spec``, its ``_label_members``: substring pre-checks for a list."""
    return [_label_members(label, expected) for label, expected in spec.items()]


# The stored columns whose raw text holds everything ``SEARCHABLE_SQL`` is built from, the
# likeliest to hold a term first.
_RAW_TEXT_COLUMNS = ("e.payload", "e.event", "e.resource", "e.related")


def _text_sql(term: str, *, negated: bool = False) -> Sql:
    """Whether the searchable text contains ``term`` case-insensitively (lacks it, if
    ``negated``; the searchable text is never NULL, so NOT is exact).

    A term without spaces and without characters JSON may escape (``_json_safe``) lies within
    the name, one label value or the payload, so it is also in the lowercased raw text of one
    of the stored columns (label values are stored verbatim, as orjson writes them). That test
    is a necessary condition, much cheaper than building the searchable text from parsed JSON,
    so the exact test only runs where it holds — under ``CASE``, which guarantees the order
    (``pre AND exact`` did not, and ``NOT (pre AND exact)`` evaluated both on every row).
    Measured on 1M events, ``count(*)`` of one term: 1,240 → 700 ms (include), 1,250 →
    610 ms (exclude); ``lower()`` of every row's text is most of what remains."""
    needle = term.lower()
    exact = f"contains({SEARCHABLE_SQL}, ?)"
    if " " in needle or not _json_safe(needle):
        return (f"NOT {exact}" if negated else exact), [needle]
    columns = _RAW_TEXT_COLUMNS
    pre = _any_of([f"contains(lower({column}), ?)" for column in columns])
    then, otherwise = (f"NOT {exact}", "TRUE") if negated else (exact, "FALSE")
    return f"CASE WHEN {pre} THEN {then} ELSE {otherwise} END", [needle] * (len(columns) + 1)


def _exists_related(condition: Sql, hints: list[list[str]]) -> Sql:
    # Measured on 1M events × 3 related (numbers in collector/store/feed_pages.py): lambdas over
    # the list run >10x faster than `EXISTS (SELECT 1 FROM unnest(e.related) …)`, which DuckDB
    # plans as a correlated join; list_filter, list_bool_or(list_transform) and
    # list_contains(list_transform, true) are within noise of each other.
    sql, params = condition
    exists = f"len(list_filter({RELATED_ITEMS}, lambda r: {sql})) > 0"
    hint = _substring_hint("e.related", hints)
    if hint is None:
        return exists, params
    return f"({hint[0]} AND {exists})", [*hint[1], *params]


# --------------------------------------------------------------------------- models

# --------------------------------------------------------------------------- filter parts


def _occurred_sql(f: EventOccurredFilter) -> Sql:
    clauses: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        clauses.append("e.occurred >= ?")
        params.append(f.since)
    if f.until is not None:
        clauses.append("e.occurred <= ?")
        params.append(f.until)
    return _all_of(clauses), params


def _name_sql(f: EventNameFilter) -> Sql:
    clauses: list[str] = []
    params: list[Any] = []
    if f.prefix:
        sql, p = _prefix_sql(("e.event", []), f.prefix)
        clauses.append(sql)
        params += p
    if f.name:
        sql, p = _in_sql(("e.event", []), f.name)
        clauses.append(sql)
        params += p
    if f.exclude_prefix:
        # e.event is NOT NULL, so NOT is exact here.
        clauses += ["NOT starts_with(e.event, ?)"] * len(f.exclude_prefix)
        params += f.exclude_prefix
    if f.exclude_name:
        clauses.append(f"e.event NOT IN ({_placeholders(len(f.exclude_name))})")
        params += f.exclude_name
    return _all_of(clauses), params


def _primary_labels_sql(spec: Mapping[str, str | Sequence[str]], label_sets: bool) -> Sql:
    """The primary resource's labels: through the label sets (``_label_set_sql``), or on each
    event's own JSON — cheaper when only a short time window of events is read, as scanning the
    label sets costs the same whatever the window (measured on 1M events, a page's keys in its
    newest 2 h: 18 ms with the label sets, 3 ms on the JSON; loaded machine)."""
    if label_sets:
        return _label_set_sql(spec)
    return _spec_sql(spec, "e.resource", "e.resource_id", stored=True)


def _resource_sql(f: EventResourceFilter, *, label_sets: bool = True) -> Sql:
    parts: list[Sql] = []
    if f.id:
        parts.append(_in_sql(("e.resource_id", []), f.id))
    if f.id_prefix:
        parts.append(_prefix_sql(("e.resource_id", []), f.id_prefix))
    if f.labels:
        parts.append(_primary_labels_sql(f.labels, label_sets))
    return _all_of([p[0] for p in parts]), [x for p in parts for x in p[1]]


def _related_sql(f: EventRelatedFilter) -> Sql:
    if f.is_noop:
        return TRUE_SQL
    keyed = _related_keys_sql(f)
    if keyed is None or not f.labels:
        return keyed or _related_json_sql(f)
    # Labels of the same item are tested on the JSON, of the events the keys select.
    json_sql, json_params = _related_json_sql(f)
    return f"({keyed[0]} AND {json_sql})", [*keyed[1], *json_params]


def _related_json_sql(f: EventRelatedFilter) -> Sql:
    """The related filter on the ``related`` JSON of every event (exact; what the side table
    answers without reading it, and the only way for labels of related items)."""
    rid, role = label_sql("r", RESOURCE_ID), label_sql("r", RESOURCE_ROLE)
    parts: list[Sql] = []
    # Substring hints, the most selective first: ids, then labels, then roles (a role
    # is shared by many resources; its hint only helps when nothing else is given).
    hints: list[list[str]] = []
    if f.id:
        parts.append(_in_sql(rid, f.id))
        hints.append(_hint_group([_member(RESOURCE_ID, v) for v in f.id]))
    if f.resources_in_roles:
        pairs: list[str] = []
        pair_params: list[Any] = []
        for resource_id, resource_role in f.resources_in_roles:
            pairs.append(f"({rid[0]} = ? AND {role[0]} = ?)")
            pair_params += [*rid[1], resource_id, *role[1], resource_role]
        parts.append((_any_of(pairs), pair_params))
        ids = [_member(RESOURCE_ID, i) for i, _ in f.resources_in_roles]
        hints.append(_hint_group(ids))
    if f.labels:
        parts.append(_spec_sql(f.labels, "r"))
        hints += _spec_members(f.labels)
    if f.role:
        parts.append(_in_sql(role, f.role))
        hints.append(_hint_group([_member(RESOURCE_ROLE, v) for v in f.role]))
    condition = (_all_of([p[0] for p in parts]), [x for p in parts for x in p[1]])
    return _exists_related(condition, hints)


def _any_resource_conditions(
    f: EventAnyResourceFilter,
    labels: str,
    rid: Sql,
    id_column: str | None,
    label_sets: bool = True,
) -> Sql:
    parts: list[Sql] = []
    if f.id:
        parts.append(_in_sql(rid, f.id))
    if f.id_prefix:
        parts.append(_prefix_sql(rid, f.id_prefix))
    if f.labels:
        if labels == "e.resource":
            parts.append(_primary_labels_sql(f.labels, label_sets))
        else:
            parts.append(_spec_sql(f.labels, labels, id_column))
    return _all_of([p[0] for p in parts]), [x for p in parts for x in p[1]]


def _any_resource_sql(f: EventAnyResourceFilter, *, label_sets: bool = True) -> Sql:
    if f.is_noop:
        return TRUE_SQL
    primary = _any_resource_conditions(
        f, "e.resource", ("e.resource_id", []), "e.resource_id", label_sets
    )
    hints = [_hint_group([_member(RESOURCE_ID, v) for v in f.id or []])]
    prefixes = [_member(RESOURCE_ID, p, prefix=True) for p in f.id_prefix or []]
    hints.append(_hint_group(prefixes))
    hints += _spec_members(f.labels or {})
    related = _exists_related(
        _any_resource_conditions(f, "r", label_sql("r", RESOURCE_ID), None),
        hints,
    )
    return f"({primary[0]} OR {related[0]})", primary[1] + related[1]


def _id_sql(f: EventIDFilter) -> Sql:
    if not f.id:
        return TRUE_SQL
    return f"e.id IN ({', '.join(['?::UUID'] * len(f.id))})", [str(i) for i in f.id]


def _text_filter_sql(f: EventTextFilter) -> Sql:
    parsed = f.parsed
    clauses: list[str] = []
    params: list[Any] = []
    if parsed.include:
        included = [_text_sql(t) for t in parsed.include]
        clauses.append(_any_of([sql for sql, _ in included]))
        params += [x for _, p in included for x in p]
    for term in parsed.exclude:
        sql, p = _text_sql(term, negated=True)
        clauses.append(sql)
        params += p
    for term in parsed.required:
        sql, p = _text_sql(term)
        clauses.append(sql)
        params += p
    return _all_of(clauses), params


def _whole_filter_sql(f: EventFilter, *, label_sets: bool = True) -> Sql:
    clauses: list[str] = []
    params: list[Any] = []
    for part in f.parts:
        sql, p = filter_sql(part, label_sets=label_sets)
        if sql != "TRUE":
            clauses.append(sql)
            params += p
    if not clauses:
        return TRUE_SQL
    return " AND ".join(clauses), params


# The parts whose builders take ``label_sets``.
_LABELLED = (EventResourceFilter, EventAnyResourceFilter, EventFilter)

# One SQL builder per filter part type (the parts are a closed set of pydantic models).
_BUILDERS: dict[type[FilterPart], Callable[..., Sql]] = {
    EventOccurredFilter: _occurred_sql,
    EventNameFilter: _name_sql,
    EventResourceFilter: _resource_sql,
    EventRelatedFilter: _related_sql,
    EventAnyResourceFilter: _any_resource_sql,
    EventIDFilter: _id_sql,
    EventTextFilter: _text_filter_sql,
    EventFilter: _whole_filter_sql,
}


def filter_sql(part: FilterPart, *, label_sets: bool = True) -> Sql:
    """A WHERE fragment over ``events`` aliased ``e`` and its ``?`` parameters, selecting
    exactly the events ``part.includes()`` accepts.

    ``label_sets`` False tests the primary resource's labels on each event's JSON instead of
    through ``herald_label_sets`` (the same answer): for queries that read a short time window
    only (``_primary_labels_sql``)."""
    if isinstance(part, _LABELLED):
        return _BUILDERS[type(part)](part, label_sets=label_sets)
    return _BUILDERS[type(part)](part)


__all__ = ["RELATED_ITEMS", "SEARCHABLE_SQL", "TRUE_SQL", "Sql", "filter_sql", "label_sql"]
