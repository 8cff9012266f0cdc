"""A small instrumented app for the OpenTelemetry exporter plugin (docs/integrations.md).

It uses only the OpenTelemetry API and ``logging``: where its spans and records go is decided
outside it, e.g.

    OTEL_SERVICE_NAME=shop OTEL_TRACES_EXPORTER=herald OTEL_LOGS_EXPORTER=herald \\
    OTEL_METRICS_EXPORTER=none HERALD_DB=shop.duckdb \\
    opentelemetry-instrument python examples/otel_plugin_app.py

A checkout span with a child charge span that logs a warning, and a refund span that fails with
an exception. Prints the trace id (hex) on stdout.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

tracer = trace.get_tracer("shop.checkout")
log = logging.getLogger("shop.checkout")


def main() -> None:
    with tracer.start_as_current_span("checkout") as span:
        span.set_attribute("order.id", "o-42")
        with tracer.start_as_current_span("charge"):
            log.warning("card declined for order %s", "o-42")
        try:
            with tracer.start_as_current_span("refund"):
                raise RuntimeError("refund service down")
        except RuntimeError:
            log.exception("refund failed")
        print(f"{span.get_span_context().trace_id:032x}")


if __name__ == "__main__":
    main()
