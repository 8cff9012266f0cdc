"""Import rules that keep the data flow readable (docs/architecture.md): wire formats stay at
the edge, only the store touches DuckDB, the CLI is the only Typer code, and internal imports
point down the layers (``LAYERS``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# module prefix → packages it may import (as path prefixes under the repo)
RULES = {
    "duckdb": ["collector/store/"],
    # The cluster's PostgreSQL: the automations leader's lock and the automations state.
    "psycopg": ["collector/cluster/"],
    "grpc": [
        "collector/server/",
        "collector/_proto/",
        # The server's clients; the offline reader and the interface stay free of grpc.
        "collector/client/connection.py",
        "collector/client/remote.py",
        "collector/client/automations.py",
        "collector/client/otlp.py",
        "collector/app.py",
        "collector/testing.py",
    ],
    # pipeline/otlp_ingest.py: OTLP's ingest step answers with OTLP's export responses.
    "opentelemetry.proto": [
        "collector/mapping/",
        "collector/server/otlp",
        "collector/pipeline/otlp_ingest.py",
        # The OTLP client sends what the SDK plugin (collector/otel/) encoded.
        "collector/client/otlp.py",
        "collector/otel/",
    ],
    # The SDK and its instrumentation are the herald[otel] extra: only the plugin imports them.
    "opentelemetry.sdk": ["collector/otel/"],
    "opentelemetry.exporter": ["collector/otel/"],
    "opentelemetry.instrumentation": ["collector/otel/"],
    # testing.py: the webhook receiver that automation tests send to is a real HTTP server.
    # collector/web/: the web UI's pages are aiohttp handlers, like the other HTTP routes.
    "aiohttp": ["collector/server/", "collector/web/", "collector/app.py", "collector/testing.py"],
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


# Internal layers, low → high. Each package (or top-level module) of collector/ and the CLI may
# import itself and the packages listed for it — nothing else of ours. The arrows follow the data
# path: domain records at the bottom, wire formats (mapping) and storage (store) on them, the
# ingest steps (pipeline) and the automations runtime above, the receivers (server) above those,
# and app.py, the one place that wires parts together, on top. The client package, the SDK and the
# CLI are the outside: they reach a running server over the wire, never its modules.
LEAVES = (
    "collector.errors",
    "collector.clock",
    "collector.niceness",
    "collector.process_memory",
    "collector.version",
)
LAYERS: dict[str, tuple[str, ...]] = {
    "collector.errors": (),
    "collector.clock": (),
    "collector.niceness": (),
    "collector.process_memory": (),
    "collector.version": (),
    "collector.config": ("collector.errors",),
    "collector.domain": ("collector.errors", "collector.clock"),
    "collector.mapping": (*LEAVES, "collector.domain"),
    "collector.store": (*LEAVES, "collector.config", "collector.domain"),
    # What collectors share in PostgreSQL (the leader lock, the automations state): beside
    # the store.
    "collector.cluster": (*LEAVES, "collector.config", "collector.domain"),
    # Not the store: the ingest steps hand batches to the EventSink interface (wired in app.py).
    "collector.pipeline": (*LEAVES, "collector.config", "collector.domain", "collector.mapping"),
    # Not the store, the pipeline or the server: the runtime is handed its store (through the
    # AutomationStateStore protocol in domain/) and its event ingest by app.py.
    "collector.automations": (*LEAVES, "collector.config", "collector.domain"),
    "collector.server": (
        *LEAVES,
        "collector._proto",
        "collector.config",
        "collector.domain",
        "collector.mapping",
        "collector.store",
        "collector.pipeline",
        "collector.automations",
    ),
    # The web UI: pages on the HTTP server, reading through the same interfaces as the API.
    "collector.web": (
        *LEAVES,
        "collector.config",
        "collector.domain",
        "collector.pipeline",
        "collector.automations",
        "collector.server",
    ),
    "collector.app": (
        *LEAVES,
        "collector._proto",
        "collector.config",
        "collector.domain",
        "collector.mapping",
        "collector.store",
        "collector.cluster",
        "collector.pipeline",
        "collector.automations",
        "collector.server",
        "collector.web",
    ),
    # The store: the offline reader (--db) is a client that opens the DuckDB file itself.
    "collector.client": (
        *LEAVES,
        "collector._proto",
        "collector.config",
        "collector.domain",
        "collector.store",
    ),
    "collector.sdk": (*LEAVES, "collector.config", "collector.domain", "collector.client"),
    # The OTel SDK exporter plugin: remote mode through the client package, embedded mode maps
    # with the server's mapping and commits through the store's writer in the app's process.
    "collector.otel": (
        *LEAVES,
        "collector.config",
        "collector.domain",
        "collector.mapping",
        "collector.store",
        "collector.client",
    ),
    # The package root is the SDK's public face (``from collector import emit_event``).
    "collector": (*LEAVES, "collector.domain", "collector.sdk"),
    # The test harness starts a whole server, as `herald serve` does.
    "collector.testing": (*LEAVES, "collector.config", "collector.app", "collector.client"),
    # The CLI reaches a server only through the client package.
    "cli": (*LEAVES, "collector", "collector.config", "collector.domain", "collector.client"),
}

# Single files allowed one arrow more than their package, with the reason.
EXTRA: dict[str, tuple[str, ...]] = {
    # `herald serve` is the command that starts the server in-process.
    "cli/serve.py": ("collector.app",),
}


def layer_of(module: str) -> str | None:
    """The ``LAYERS`` key a dotted module name belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] == "cli":
        return "cli"
    if parts[0] != "collector":
        return None
    if len(parts) == 1:
        return "collector"
    return "collector." + parts[1]


def module_of(path: Path) -> str:
    """The dotted module name of a source file (a package's ``__init__.py`` is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path) -> set[str]:
    """Our modules ``path`` imports, absolute, at any depth (lazy and TYPE_CHECKING imports
    count too: an arrow drawn only for a type still points where it points)."""
    package = ".".join(path.relative_to(ROOT).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from collector import errors` imports collector.errors, not the package root.
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).is_dir() or (
                    ROOT / Path(*sub.split("."))
                ).with_suffix(".py").is_file()
                found.add(sub if is_module else base)
    return {name for name in found if layer_of(name) is not None}


def test_every_package_has_a_layer() -> None:
    """A new package of collector/ gets its row in ``LAYERS`` (where it sits is a decision)."""
    missing = sorted({str(layer_of(module_of(path))) for path in SOURCES} - set(LAYERS))
    assert not missing, f"add these to LAYERS in {Path(__file__).name}: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_internal_imports_point_down(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    own = layer_of(module_of(path))
    assert own is not None
    allowed = {own, *LAYERS.get(own, ()), *EXTRA.get(rel, ())}
    wrong = sorted(
        f"{rel} imports {name} ({own} may import only: {', '.join(sorted(allowed - {own}))})"
        for name in internal_imports(path)
        if layer_of(name) not in allowed
    )
    assert not wrong, "imports point the wrong way:\n" + "\n".join(wrong)


def test_the_server_reads_through_the_store_interface() -> None:
    """The receivers and the feed take the store's protocols (``collector.domain.event_store``),
    never its DuckDB classes, so a second storage backend is wired in app.py alone. The one store
    module they may name is ``store.sql``, for the time-limit rule of user SQL."""
    allowed = {"collector.store.sql"}
    for path in ROOT.glob("collector/server/*.py"):
        found = imports(path)
        wrong = {n for n in found if n.startswith("collector.store")} - allowed
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
