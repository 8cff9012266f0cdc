"""Import rules that keep the data flow readable (docs/architecture.md): wire formats stay at
the edge, only the store touches DuckDB, the CLI is the only Typer code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# module prefix → packages it may import (as path prefixes under the repo)
RULES = {
    "duckdb": ["collector/store/"],
    "grpc": [
        "collector/server/",
        "collector/_proto/",
        # The server's clients; the offline reader and the interface stay free of grpc.
        "collector/client/connection.py",
        "collector/client/remote.py",
        "collector/client/automations.py",
        "collector/app.py",
        "collector/testing.py",
    ],
    # pipeline/otlp_ingest.py: OTLP's ingest step answers with OTLP's export responses.
    "opentelemetry.proto": [
        "collector/mapping/",
        "collector/server/otlp",
        "collector/pipeline/otlp_ingest.py",
    ],
    # testing.py: the webhook receiver that automation tests send to is a real HTTP server.
    "aiohttp": ["collector/server/", "collector/app.py", "collector/testing.py"],
    "typer": ["cli/"],
    "rich": ["cli/"],
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


SOURCES = sorted(
    p
    for p in [*ROOT.glob("collector/**/*.py"), *ROOT.glob("cli/**/*.py")]
    if "_proto" not in p.parts
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_third_party_imports_stay_in_their_layer(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    for name in imports(path):
        for module, allowed in RULES.items():
            if name == module or name.startswith(module + "."):
                assert any(rel.startswith(a) for a in allowed), f"{rel} imports {name}"


def test_collector_never_imports_the_cli() -> None:
    for path in ROOT.glob("collector/**/*.py"):
        assert not any(n == "cli" or n.startswith("cli.") for n in imports(path)), path


def test_ingest_goes_through_the_event_sink() -> None:
    """The ingest steps (collector/pipeline/) know only the ``EventSink`` interface, and the
    receivers (collector/server/) only the ingest steps: neither imports the writer, so a second
    storage backend is wired in app.py alone."""
    for path in ROOT.glob("collector/pipeline/*.py"):
        found = imports(path)
        assert not any(n == "collector.store" or n.startswith("collector.store.") for n in found), (
            path
        )
    for path in ROOT.glob("collector/server/*.py"):
        assert "collector.store.writer" not in imports(path), path
