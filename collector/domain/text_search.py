"""Prefect's event text search (P§4.4, ``text_search_parser.py``): the query syntax and the
text an event is searched in.

Owns parsing (``parse_text_query``) and the search space of one event in memory
(``searchable_text``); its SQL twin is ``SEARCHABLE_SQL`` in ``collector.store.filter_sql``,
and the filter tests check that the two agree. No pydantic, no
DuckDB.

Syntax: space-separated terms are ORed; ``-term``/``!term`` excludes; ``+term`` is required;
``"a phrase"`` matches exactly (``\\"`` escapes a quote); a prefix followed by a space is
ignored; matching is case-insensitive substring matching; an empty query matches everything.

Search space (decision): the event name, the *values* of the primary and related resources'
labels, and the payload's JSON text (keys and values), joined by spaces. This is
Prefect's in-memory definition, with the payload as JSON instead of Python's ``str(dict)``;
Prefect's SQL also searches label *keys*, which its in-memory path does not — Herald searches
values only, on both paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_QUERY_LENGTH = 200

_PREFIXES = "-!+"


@dataclass(frozen=True, slots=True)
class TextQuery:
    """A parsed query; the terms keep their case (matching lowercases both sides)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.include or self.exclude or self.required)

    def matches(self, text: str) -> bool:
        """True if ``text`` passes: some include term (if any), no exclude, all required."""
        haystack = text.lower()
        if self.include and not any(t.lower() in haystack for t in self.include):
            return False
        if any(t.lower() in haystack for t in self.exclude):
            return False
        return all(t.lower() in haystack for t in self.required)


def _unescape_phrase(phrase: str) -> str:
    # Only \" and \\ are escapes; any other backslash stays as it is (Prefect's rule).
    out: list[str] = []
    i = 0
    while i < len(phrase):
        ch = phrase[i]
        if ch == "\\" and i + 1 < len(phrase) and phrase[i + 1] in '"\\':
            out.append(phrase[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_text_query(query: str) -> TextQuery:
    """Parse Prefect's text search syntax into include / exclude / required terms.

    >>> parse_text_query('error -debug +"db timeout"')
    TextQuery(include=('error',), exclude=('debug',), required=('db timeout',))
    """
    include: list[str] = []
    exclude: list[str] = []
    required: list[str] = []
    buckets = {None: include, "-": exclude, "!": exclude, "+": required}
    n = len(query)
    i = 0
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        prefix: str | None = None
        if query[i] in _PREFIXES:
            if i + 1 < n and not query[i + 1].isspace():
                prefix = query[i]
                i += 1
            else:
                # A prefix followed by a space (or the end) is ignored.
                i += 1
                continue
        if query[i] == '"':
            i += 1
            start = i
            while i < n:
                if query[i] == "\\" and i + 1 < n:
                    i += 2
                elif query[i] == '"':
                    break
                else:
                    i += 1
            phrase = _unescape_phrase(query[start:i])
            if i < n:
                i += 1  # the closing quote; an unclosed phrase runs to the end
            if phrase.strip():
                buckets[prefix].append(phrase)
            continue
        start = i
        while i < n and not query[i].isspace() and query[i] != '"':
            i += 1
        if i > start:
            buckets[prefix].append(query[start:i])
    return TextQuery(tuple(include), tuple(exclude), tuple(required))


def searchable_text(
    name: str,
    resource: Mapping[str, str],
    related: Iterable[Mapping[str, str]],
    payload_json: str,
) -> str:
    """The text one event is searched in (not lowercased), as ``filter_sql.SEARCHABLE_SQL``:
    the name, the resource's label values, the related resources' label values and the
    payload JSON, each group space-joined, the four joined by single spaces."""
    related_values = " ".join(v for item in related for v in item.values())
    return " ".join((name, " ".join(resource.values()), related_values, payload_json))
