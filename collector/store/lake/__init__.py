"""The DuckLake backend: Herald's events in a lake (a SQL catalog — PostgreSQL for several
collectors, SQLite or a DuckDB file for one host — plus Parquet files under a data path),
shared by every collector that points at the same catalog. DuckLake is DuckDB's, so the feed's
SQL (``store/feed_pages.py``, ``feed_counts.py``, ``filter_sql.py``), user SQL and the writer
thread (``store/writer.py``) are the DuckDB backend's own; this package owns what differs —
opening the lake, committing across collectors, following other collectors' snapshots and the
lake's upkeep. See docs/scale-out.md.
"""
