"""The DuckDB store: the only package that imports duckdb."""
