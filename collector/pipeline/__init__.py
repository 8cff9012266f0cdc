"""The ingest pipeline between the receivers and the store: the ingest steps (``ingest``:
native JSON events; ``otlp_ingest``: OTLP export requests), the ``EventSink`` they commit
through (``sink``), and the live tail that fans committed batches out to subscribers
(``tail``, ``tail_index``). Nothing here knows a transport or a storage engine."""
