"""Prefect's label matching (P§4.2): tables of cases in the style of Prefect's
``tests/events/server/triggers/test_basics.py``; every case also runs through ``compile_spec``."""

from __future__ import annotations

import pytest

from collector.domain.matching import (
    ResourceSpecification,
    any_labels_match,
    compile_spec,
    labels_match,
    pattern_to_like,
    value_matches,
)

FILE = {"prefect.resource.id": "app.file.1", "path": "s3://bucket/object.csv", "kind": "file"}


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        pytest.param("file.csv", "file.csv", id="exact"),
        pytest.param("*.csv", "file.csv", id="leading-star"),
        pytest.param("s3://*.csv", "s3://bucket/object.csv", id="middle-star"),
        pytest.param("file.*", "file.csv", id="trailing-star"),
        pytest.param("*", "any.old.thing", id="star-matches-anything"),
        pytest.param("*", "", id="star-matches-empty"),
        pytest.param("a*b*c", "a-x-b-y-c", id="two-stars"),
        pytest.param("file.cs?", "file.csv", id="question-mark"),
        pytest.param("?", "é", id="question-mark-is-one-character"),
        pytest.param("a*", "a\nb", id="star-spans-newlines"),
        pytest.param("!nah*", "yes", id="negated-prefix"),
        pytest.param("!nah", "!nah", id="negated-literal-vs-bang-value"),
        pytest.param("100%", "100%", id="percent-is-literal"),
        pytest.param("a_b", "a_b", id="underscore-is-literal"),
        pytest.param("c\\d", "c\\d", id="backslash-is-literal"),
        pytest.param("[ab]", "[ab]", id="brackets-are-literal"),
        pytest.param("x*y", "x*y", id="star-also-matches-itself"),
        pytest.param("a?b", "a_b", id="question-mark-matches-underscore"),
        pytest.param("!", "anything", id="bang-alone-negates-empty"),
    ],
)
def test_value_matches(pattern: str, value: str) -> None:
    assert value_matches(pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        pytest.param("file.csv", "file.txt", id="exact"),
        pytest.param("*.csv", "file.csv.gz", id="leading-star-anchored"),
        pytest.param("file.*", "afile.csv", id="trailing-star-anchored"),
        pytest.param("a*b", "ab-", id="middle-star-anchored"),
        pytest.param("ab*ba", "aba", id="head-and-tail-must-not-overlap"),
        pytest.param("file.cs?", "file.cs", id="question-mark-needs-a-character"),
        pytest.param("file.cs?", "file.csvx", id="question-mark-is-only-one"),
        pytest.param("Case", "case", id="case-sensitive"),
        pytest.param("!nah*", "nah-thing", id="negated-prefix"),
        pytest.param("!exact", "exact", id="negated-exact"),
        pytest.param("100%", "1000", id="percent-is-not-a-wildcard"),
        pytest.param("a_b", "axb", id="underscore-is-not-a-wildcard"),
        pytest.param("[ab]", "a", id="brackets-are-not-a-class"),
        pytest.param("*", None, id="missing-label"),
        pytest.param("!anything", None, id="missing-label-negated"),
        pytest.param("!*", "x", id="negated-star-matches-nothing"),
    ],
)
def test_value_does_not_match(pattern: str, value: str | None) -> None:
    assert not value_matches(pattern, value)


SPEC_CASES = [
    pytest.param({}, FILE, True, id="empty-spec-matches-all"),
    pytest.param({"kind": "file"}, FILE, True, id="single-label"),
    pytest.param({"kind": ["dir", "file"]}, FILE, True, id="list-is-or"),
    pytest.param({"kind": ["dir", "link"]}, FILE, False, id="list-none-match"),
    pytest.param({"kind": []}, FILE, False, id="empty-list-matches-nothing"),
    pytest.param({"kind": "file", "path": "*.csv"}, FILE, True, id="labels-are-and"),
    pytest.param({"kind": "file", "path": "*.txt"}, FILE, False, id="labels-are-and-one-fails"),
    pytest.param({"missing": "*"}, FILE, False, id="missing-label-never-matches"),
    pytest.param({"only-a-negative": "!nah"}, FILE, False, id="negative-requires-label"),
    pytest.param({"kind": "!dir"}, FILE, True, id="negative-present-label"),
    pytest.param(
        {"kind": ["dev-*", "!dev-automations"]},
        {"kind": "prod"},
        True,
        id="mixed-list-admits-other-values",
    ),
    pytest.param(
        {"kind": ["this", "!that", "other"]},
        {"kind": "that"},
        False,
        id="mixed-list-rejects-only-the-negated",
    ),
    pytest.param(
        {"kind": ["this", "!that", "other"]},
        {"kind": "else"},
        True,
        id="mixed-list-accepts-anything-else",
    ),
    pytest.param({"prefect.resource.id": "app.file.*"}, FILE, True, id="resource-id-glob"),
    pytest.param(
        {"prefect.resource.id": "app.*", "kind": "!file"},
        FILE,
        False,
        id="and-with-failing-negation",
    ),
]


@pytest.mark.parametrize(("spec", "labels", "expected"), SPEC_CASES)
def test_labels_match(spec: ResourceSpecification, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(spec, labels) is expected


@pytest.mark.parametrize(("spec", "labels", "expected"), SPEC_CASES)
def test_compiled_spec_agrees_with_labels_match(
    spec: ResourceSpecification, labels: dict[str, str], expected: bool
) -> None:
    assert compile_spec(spec)(labels) is expected


def test_any_labels_match_empty_spec_includes_no_candidates() -> None:
    assert any_labels_match({}, [])
    assert not any_labels_match({"kind": "*"}, [])


def test_any_labels_match_needs_one_candidate_satisfying_all_labels() -> None:
    a = {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.a"}
    b = {"prefect.resource.role": "flow", "prefect.resource.id": "prefect.flow.1"}
    spec = {"prefect.resource.role": "flow", "prefect.resource.id": "prefect.tag.*"}
    assert not any_labels_match(spec, [a, b])
    assert any_labels_match({"prefect.resource.role": "flow"}, [a, b])


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        pytest.param("abc", "abc", id="plain"),
        pytest.param("a*c?", "a%c_", id="wildcards"),
        pytest.param("100%", "100\\%", id="percent"),
        pytest.param("a_b", "a\\_b", id="underscore"),
        pytest.param("c\\d", "c\\\\d", id="backslash"),
        pytest.param("\\*", "\\\\%", id="backslash-before-star-is-not-an-escape"),
    ],
)
def test_pattern_to_like(glob: str, like: str) -> None:
    assert pattern_to_like(glob) == like
