"""Send spans and logs to Herald with the OpenTelemetry SDK, configured only through the
standard environment variables:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=checkout \\
        .venv/bin/python examples/send_otlp.py

(Add OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20<token>" when auth is on.)
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

resource = Resource.create()  # service.name from OTEL_SERVICE_NAME
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))

tracer = trace.get_tracer("examples.send_otlp")
with tracer.start_as_current_span("checkout") as span:
    span.set_attribute("order.id", "8812")
    with tracer.start_as_current_span("charge-card"):
        logging.getLogger("payments").error("card declined")

tracer_provider.shutdown()  # flushes the spans
logger_provider.shutdown()  # flushes the logs
