"""What user SQL may do: read Herald's tables, nothing else — decided on DuckDB's own parse.

Text matching cannot decide this: a leading comment hid ``EXPLAIN ANALYZE CREATE TEMP TABLE``,
``CHECKPOINT`` and ``VACUUM`` from the old first-word check, and ``SELECT * FROM checkpoint()``
is a SELECT. So every statement goes through DuckDB's parser, and is allowed only if:

1. It is exactly one statement (``extract_statements``) of type SELECT — which covers
   ``SELECT``, ``WITH``, ``FROM …``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` and
   ``PIVOT … IN (…)`` — or an ``EXPLAIN [ANALYZE]`` whose statement (found with DuckDB's
   tokenizer, so comments cannot shift it) is itself one allowed SELECT.
2. Its parse tree (``json_serialize_sql``, which serializes SELECT statements only; a
   ``PRAGMA`` that DuckDB rewrites into a SELECT does not serialize and is refused) names:

   - table functions from ``_TABLE_FUNCTIONS`` only: ``range``, ``unnest``, ``json_each``, the
     catalog's ``duckdb_tables()``/``duckdb_columns()``… Not the file readers (``read_csv``,
     ``read_parquet``, ``read_blob``, ``read_text``, ``glob``…): DuckDB's
     ``enable_external_access = false`` still lets a database read its own files (the store,
     its ``.wal``, its temp directory — measured on 1.4.4: ``read_blob('<store>.wal')``
     returned the WAL's bytes, and ``allowed_paths``/``allowed_directories`` cannot take
     them back out), so user SQL gets no file reader at all. Not ``checkpoint()``,
     ``query()``/``query_table()`` (SQL in a string, unseen by this check), and not the
     functions that show the server's paths or settings (``duckdb_databases()``,
     ``duckdb_settings()``, ``duckdb_temporary_files()``…).
   - no table whose name looks like a file (``FROM 'events.csv'``: a replacement scan), and
     none of the catalog views that show the server's paths (``_PATH_VIEWS``).
   - no scalar function from ``_SCALAR_FUNCTIONS`` (``current_setting`` shows paths).

Whatever passes still runs in a ``READ ONLY`` transaction that is rolled back, on a database
opened with external access off and its configuration locked (``EventStore``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import duckdb
import orjson

from collector.errors import InvalidSql

# Table functions user SQL may call: generators, JSON unnesting and the catalog's own
# descriptions of Herald's tables. Anything else — file readers, checkpoint(), query(),
# settings, secrets, logging, pointer scans (arrow_scan) — is refused by name.
_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "repeat",
        "repeat_row",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_optimizers",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_collations",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_version",
        "pg_timezone_names",
        "icu_calendar_names",
        "test_all_types",
    }
)

# Catalog views that show where the server keeps its files (the store's absolute path, the
# temp directory, the allowed paths). tests/robustness/test_sql_sandbox.py reads every other
# built-in view and checks that none shows the store's directory.
_PATH_VIEWS = frozenset(
    {"duckdb_databases", "pragma_database_list", "pg_settings", "duckdb_settings"}
)

# Catalogs the store attaches for itself (the DuckLake backend: the lake's metadata,
# ``__ducklake_metadata_lake``, which lists the data files' paths, and the PostgreSQL connection
# of its commit lock, ``__herald_pg``): no user table lives in one.
_INTERNAL_CATALOG_PREFIX = "__"

# Scalar functions refused: current_setting() shows paths (temp_directory, allowed_paths,
# secret_directory); getenv() would show the environment, where automation secrets live
# (HERALD_SECRET_*; not in DuckDB 1.4's Python build, refused should one add it); write_log()
# writes.
_SCALAR_FUNCTIONS = frozenset({"current_setting", "getenv", "write_log"})

_READ_ONLY = "only read-only queries of Herald's tables are allowed"

# Looked up by name: DuckDB 1.4's type stubs call these SELECT_STATEMENT/EXPLAIN_STATEMENT, the
# runtime enum SELECT/EXPLAIN; a KeyError at import would show a rename, not a silent mismatch.
_SELECT = duckdb.StatementType.__members__["SELECT"]
_EXPLAIN = duckdb.StatementType.__members__["EXPLAIN"]


def check_readonly(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``InvalidSql`` unless ``sql`` is one statement user SQL may run (module doc)."""
    statement = _one_statement(conn, sql)
    kind = statement.type
    if kind == _EXPLAIN:
        inner = _explained(sql)
        if inner is None or _one_statement(conn, inner).type != _SELECT:
            raise InvalidSql(f"{_READ_ONLY}: EXPLAIN only of a SELECT")
        _check_tree(conn, inner)
        return
    if kind != _SELECT:
        raise InvalidSql(
            f"{_READ_ONLY} (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
            f"this is a {kind.name} statement"
        )
    _check_tree(conn, sql)


def _one_statement(conn: duckdb.DuckDBPyConnection, sql: str) -> Any:
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidSql(f"SQL does not parse: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise InvalidSql(f"send exactly one statement (got {len(statements)})")
    return statements[0]


def _explained(sql: str) -> str | None:
    """The statement an ``EXPLAIN`` wraps, cut at DuckDB's own token positions (comments are
    not tokens, so none can move the cut): after ``EXPLAIN``, an optional ``ANALYZE`` and an
    optional ``(option, …)`` list. ``None`` when the text is not shaped like that (refused)."""
    words = [(pos, _token_word(sql, pos)) for pos, _ in duckdb.tokenize(sql)]
    if not words or words[0][1] != "explain":
        return None
    i = 1
    if i < len(words) and words[i][1] == "analyze":
        i += 1
    elif (
        i + 1 < len(words)
        and words[i][1] == "("
        and words[i + 1][1] not in ("select", "with", "from", "values", "(")
    ):
        depth = 0
        while i < len(words):  # skip the option list to its closing parenthesis
            depth += words[i][1] == "("
            depth -= words[i][1] == ")"
            i += 1
            if depth == 0:
                break
    if i >= len(words):
        return None
    return sql[words[i][0] :]


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _token_word(sql: str, pos: int) -> str:
    """The token at ``pos``, lower-cased, as far as ``_explained`` needs it: a word, or its
    first character (an operator, a quote, a digit)."""
    m = _WORD.match(sql, pos)
    return m.group(0).lower() if m else sql[pos]


def _check_tree(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    cur = conn.cursor()
    try:
        row = cur.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    except duckdb.Error as exc:
        raise InvalidSql(f"SQL does not parse: {_first_line(exc)}") from None
    finally:
        cur.close()
    tree = orjson.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        # json_serialize_sql serializes SELECT statements only: a PRAGMA rewritten into a
        # SELECT, or anything else it cannot show, is not checked — so not run.
        raise InvalidSql(f"{_READ_ONLY}: this statement is not a plain SELECT")
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in _TABLE_FUNCTIONS:
                raise InvalidSql(
                    f"refused: {name}() is not available to user SQL, which reads Herald's "
                    "tables only (it may not read or write files, see the server's settings "
                    "or run store maintenance)"
                )
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if any(c in name for c in "./\\:") or name.lower() in _PATH_VIEWS:
                raise InvalidSql(
                    f"refused: user SQL reads Herald's tables, not {name!r} (no files, no "
                    "server paths)"
                )
            # `x.t` parses with x as the schema, `x.s.t` with x as the catalog.
            qualifiers = (str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""))
            catalog = next((q for q in qualifiers if q.startswith(_INTERNAL_CATALOG_PREFIX)), "")
            if catalog:
                raise InvalidSql(
                    f"refused: user SQL reads Herald's tables, not the store's internal "
                    f"catalog {catalog!r}"
                )
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in _SCALAR_FUNCTIONS:
                raise InvalidSql(f"refused: {name}() is not available to user SQL")


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every object in a ``json_serialize_sql`` tree, subqueries and CTEs included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]
