"""The DuckDB extensions the lake needs, loaded from the installed wheels — never downloaded.

``duckdb-ext-ducklake``, ``duckdb-ext-postgres`` and ``duckdb-ext-sqlite`` (pinned in
pyproject.toml to DuckDB 1.4.4) each install one file,
``duckdb_ext/extensions/v<duckdb>/<platform>/<name>.duckdb_extension``, into
site-packages; the wheels' file lists (``importlib.metadata``) say where. ``LOAD`` takes
that absolute path, and the store's connection has DuckDB's autoinstall and autoload off, so
nothing is fetched from DuckDB's extension site (which these machines cannot reach).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import duckdb

from collector.errors import StoreError

# extension name (what LOAD and duckdb_extensions() call it) → the wheel that ships it.
WHEELS = {
    "ducklake": "duckdb-ext-ducklake",
    "postgres_scanner": "duckdb-ext-postgres",
    "sqlite_scanner": "duckdb-ext-sqlite",
}


def extension_file(name: str) -> Path:
    """The installed ``<name>.duckdb_extension`` built for this DuckDB (``StoreError`` if its
    wheel is missing or was built for another DuckDB version)."""
    wheel = WHEELS[name]
    try:
        dist = importlib.metadata.distribution(wheel)
    except importlib.metadata.PackageNotFoundError:
        raise StoreError(
            f"the DuckLake backend needs the {wheel} package (pip install '{wheel}'; "
            "pyproject.toml pins the version built for this DuckDB)"
        ) from None
    wanted = f"v{duckdb.__version__}"
    found = [
        f for f in dist.files or [] if f.name == f"{name}.duckdb_extension" and wanted in f.parts
    ]
    if not found:
        raise StoreError(
            f"{wheel} {dist.version} has no {name} extension for DuckDB {duckdb.__version__} "
            "(install the version pyproject.toml pins)"
        )
    return Path(str(dist.locate_file(found[0])))


def load(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """``LOAD`` the extension ``name`` from its wheel's file."""
    path = extension_file(name)
    try:
        conn.execute(f"LOAD '{_quoted(str(path))}'")
    except duckdb.Error as exc:
        raise StoreError(f"cannot load the {name} extension from {path}: {exc}") from None


def _quoted(text: str) -> str:
    return text.replace("'", "''")
