"""``register``: one call that sets up the OpenTelemetry SDK to send to Herald (as
``phoenix.otel.register`` does for Phoenix), and ``register_logs`` for the logs signal.

Both take the same ``address`` / ``token`` / ``db`` as the exporters (the environment decides
what is not given: ``HERALD_DB`` for embedded mode, else ``HERALD_ADDRESS`` / ``HERALD_TOKEN``).
The providers shut down at interpreter exit (the SDK's default), which exports what is buffered
and releases the store file; call ``provider.shutdown()`` to do it sooner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.util.types import AttributeValue

from collector.otel.exporters import DEFAULT_TIMEOUT_SECONDS, HeraldLogExporter, HeraldSpanExporter


def _resource(
    service_name: str | None, resource_attributes: Mapping[str, AttributeValue] | None
) -> Resource:
    # Resource.create also reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; what is given
    # here wins over them.
    attributes = dict(resource_attributes or {})
    if service_name:
        attributes[SERVICE_NAME] = service_name
    return Resource.create(attributes)


def register(
    service_name: str | None = None,
    *,
    address: str | None = None,
    token: str | None = None,
    db: str | None = None,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    batch: bool = True,
    set_global: bool = True,
    logs: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> TracerProvider:
    """A ``TracerProvider`` whose spans go to Herald, set as the global one unless
    ``set_global=False``.

    ``batch=False`` exports each span as it ends (``SimpleSpanProcessor``: tests, scripts that
    read the store right away); the default batches them in the background. ``logs=True`` also
    calls ``register_logs`` with the same settings, so ``logging`` records go to Herald too.
    Raises ``ConfigError`` for a conflicting target and ``StoreError`` when the store file
    cannot be opened (e.g. a running ``herald serve`` holds it).
    """
    resource = _resource(service_name, resource_attributes)
    exporter = HeraldSpanExporter(address=address, token=token, db=db, timeout=timeout)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    if set_global:
        trace.set_tracer_provider(provider)
    if logs:
        register_logs(
            address=address,
            token=token,
            db=db,
            resource=resource,
            batch=batch,
            set_global=set_global,
            timeout=timeout,
        )
    return provider


def register_logs(
    service_name: str | None = None,
    *,
    address: str | None = None,
    token: str | None = None,
    db: str | None = None,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    resource: Resource | None = None,
    batch: bool = True,
    set_global: bool = True,
    handler_level: int = logging.NOTSET,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> LoggerProvider:
    """A ``LoggerProvider`` whose records go to Herald. With ``set_global`` (the default) it
    becomes the global one and a handler on the root logger sends ``logging`` records to it
    (records of ``handler_level`` and above; the loggers' own levels apply first)."""
    exporter = HeraldLogExporter(address=address, token=token, db=db, timeout=timeout)
    provider = LoggerProvider(resource=resource or _resource(service_name, resource_attributes))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter) if batch else SimpleLogRecordProcessor(exporter)
    )
    if set_global:
        set_logger_provider(provider)
        logging.getLogger().addHandler(
            LoggingHandler(level=handler_level, logger_provider=provider)
        )
    return provider
