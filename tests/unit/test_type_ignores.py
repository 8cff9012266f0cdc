"""Every ``# type: ignore`` names the error it silences and says why, on its own line:
``# type: ignore[code]  # reason``. A bare ignore hides every error on the line, later ones too,
and an ignore without its reason cannot be judged when the code or its dependency changes."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The generated protobuf/gRPC modules are not ours to annotate (pyproject's mypy skips them).
SOURCES = sorted(
    p
    for top in ("collector", "cli", "tests", "benchmarks", "examples")
    for p in (ROOT / top).glob("**/*.py")
    if "_proto" not in p.relative_to(ROOT).parts
)

# The pragma as mypy reads it: `#`, then `type: ignore` (prose about ignores is not one).
IGNORE = re.compile(r"#\s*type:\s*ignore")
# `type: ignore[code, code]` then a comment of its own with a few words of reason.
WELL_FORMED = re.compile(r"#\s*type: ignore\[[a-z][a-z0-9-]*(, ?[a-z][a-z0-9-]*)*\]\s+#\s*\S.{9,}")


def ignores(source: str) -> list[tuple[int, str]]:
    """The comments (line, text) that contain a type-ignore; strings that mention one don't."""
    return [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and IGNORE.search(token.string)
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_type_ignores_name_their_code_and_reason(path: Path) -> None:
    rel = path.relative_to(ROOT)
    bad = [
        f"{rel}:{line}: {comment}"
        for line, comment in ignores(path.read_text())
        if not WELL_FORMED.search(comment)
    ]
    hint = "write `# type: ignore[code]  # why` (or remove the ignore):"
    assert not bad, "\n".join([hint, *bad])


@pytest.mark.parametrize(
    ("comment", "ok"),
    [
        ("x = f()  # type: ignore\n", False),
        ("x = f()  # type: ignore[arg-type]\n", False),
        ("x = f()  # type: ignore[arg-type]  # ok\n", False),  # too short to be a reason
        ("x = f()  # type: ignore  # pyarrow has no hints\n", False),
        ("x = f()  # type: ignore[arg-type]  # pyarrow has no hints\n", True),
        ("x = f()  # type: ignore[attr-defined, no-any-return]  # the SDK has no hints\n", True),
        ('x = "# type: ignore"\n', True),  # a string, not a comment
    ],
)
def test_the_rule_itself(comment: str, ok: bool) -> None:
    assert all(WELL_FORMED.search(c) for _, c in ignores(comment)) is ok
