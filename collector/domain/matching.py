"""Prefect's label matching (P§4.2, ``ResourceSpecification``): the one definition of how a
label specification matches a resource's labels.

Owns the pattern semantics, in memory (feed filters, the live tail, automation triggers) and
their translation to SQL ``LIKE`` patterns (``pattern_to_like``), so the store and the
evaluator cannot drift apart. Pure standard library: no pydantic, no DuckDB.

Semantics, exactly as Prefect's server ``matches()`` / ``ResourceSpecification.matches``:

* labels are ANDed; the values listed for one label are ORed;
* a value is a glob: ``*`` matches any run of characters (also none), ``?`` exactly one, anywhere
  in the value; every other character (``%``, ``_``, ``\\``, ``[`` …) matches itself;
* a leading ``!`` negates the rest (``!nah`` matches every value except ``nah``);
* a missing label never matches, negated or not;
* an empty value list matches nothing; an empty specification matches every resource.

Decision: ``[…]`` character classes are *not* special. Prefect's in-memory path uses
``fnmatch`` (which has them) while its SQL path uses ``LIKE`` (which has not); Herald must give
the same answer in memory and in SQL, so it follows the SQL reading.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial

# A label specification as Prefect's JSON spells it: label → one pattern or a list of them.
ResourceSpecification = Mapping[str, "str | Sequence[str]"]
# A compiled pattern: value → matches?
ValueMatcher = Callable[[str], bool]

GLOB_CHARS = frozenset("*?")
LIKE_ESCAPE = "\\"


def split_negation(pattern: str) -> tuple[bool, str]:
    """``("!x*")`` → ``(True, "x*")``; a bare ``"!"`` negates the empty string."""
    if pattern.startswith("!"):
        return True, pattern[1:]
    return False, pattern


def is_glob(body: str) -> bool:
    """True if ``body`` (a pattern without its ``!``) contains a wildcard."""
    return "*" in body or "?" in body


def pattern_to_like(body: str) -> str:
    """Translate a glob (without its ``!``) to a ``LIKE … ESCAPE '\\'`` pattern.

    ``%``, ``_`` and ``\\`` are escaped first so they match themselves, then ``*`` → ``%`` and
    ``?`` → ``_`` (Prefect's ``_is_like_match_expression``).
    """
    out: list[str] = []
    for ch in body:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append(LIKE_ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def _positive_matcher(body: str) -> ValueMatcher:
    if not is_glob(body):
        return partial(operator.eq, body)
    if "?" not in body and body.count("*") == 1:
        # The common shapes (``prefix*``, ``*suffix``, ``a*b``) without the regex engine.
        head, tail = body.split("*")
        if not tail:
            return lambda value: value.startswith(head)
        if not head:
            return lambda value: value.endswith(tail)
        least = len(head) + len(tail)
        return lambda value: len(value) >= least and value.startswith(head) and value.endswith(tail)
    regex = re.compile(
        "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in body),
        re.DOTALL,  # like SQL LIKE, `*`/`?` also match newlines
    )
    return lambda value: regex.fullmatch(value) is not None


@lru_cache(maxsize=16_384)
def compile_pattern(pattern: str) -> ValueMatcher:
    """Compile one pattern (``!`` and globs included) to a predicate on a present value.

    Cached: triggers and filters repeat the same few patterns for every event.
    """
    negated, body = split_negation(pattern)
    positive = _positive_matcher(body)
    if negated:
        return lambda value: not positive(value)
    return positive


def value_matches(pattern: str, value: str | None) -> bool:
    """Prefect's ``matches(expected, value)``: a missing value (``None``) never matches."""
    if value is None:
        return False
    return compile_pattern(pattern)(value)


def as_patterns(expected: str | Sequence[str]) -> tuple[str, ...]:
    """A specification value as a tuple of patterns (a bare string is a one-item list)."""
    if isinstance(expected, str):
        return (expected,)
    return tuple(expected)


def labels_match(spec: ResourceSpecification, labels: Mapping[str, str]) -> bool:
    """True if ``labels`` (one resource) satisfies every label of ``spec``.

    >>> labels_match({"env": ["prod", "stag*"], "team": "!ops"}, {"env": "staging", "team": "web"})
    True
    """
    for label, expected in spec.items():
        value = labels.get(label)
        if value is None:
            return False
        if isinstance(expected, str):
            if not compile_pattern(expected)(value):
                return False
        elif not any(compile_pattern(p)(value) for p in expected):
            return False
    return True


def compile_spec(spec: ResourceSpecification) -> Callable[[Mapping[str, str]], bool]:
    """Pre-compile ``spec`` once for repeated use (an automation's ``match``/``match_related``).

    The returned predicate gives the same answers as ``labels_match(spec, labels)``.
    """
    compiled = tuple(
        (label, tuple(compile_pattern(p) for p in as_patterns(expected)))
        for label, expected in spec.items()
    )

    def matches(labels: Mapping[str, str]) -> bool:
        for label, matchers in compiled:
            value = labels.get(label)
            if value is None:
                return False
            for matcher in matchers:
                if matcher(value):
                    break
            else:
                return False
        return True

    return matches


def any_labels_match(spec: ResourceSpecification, candidates: Sequence[Mapping[str, str]]) -> bool:
    """Prefect's ``ResourceSpecification.includes``: an empty spec matches even no candidates;
    otherwise some single candidate must satisfy the whole spec."""
    if not spec:
        return True
    return any(labels_match(spec, labels) for labels in candidates)
