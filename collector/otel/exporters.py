"""The OpenTelemetry SDK exporters named ``herald`` (``OTEL_TRACES_EXPORTER=herald``,
``OTEL_LOGS_EXPORTER=herald``; entry points in pyproject.toml).

The SDK hands an exporter a batch of its own span or log objects; the OTel project's encoder
turns them into the OTLP export request any OTLP exporter sends, and then:

* **remote** (the default; ``HERALD_ADDRESS``, default ``127.0.0.1:4317``, and ``HERALD_TOKEN``)
  sends it to a Herald server's OTLP gRPC receiver (``client/otlp.py``: busy answers and an
  unreachable server are retried within the export's ``timeout``);
* **embedded** (``HERALD_DB=path``) maps it with the server's own mapping and commits it into
  the store file itself (``embedded.py``), no server needed.

Either way ``export`` returns SUCCESS only once the batch is committed. The SDK builds each
exporter without arguments, so the environment decides; arguments win over it (``register``).
A failed export is logged once per kind of failure until exports succeed again — the exporter
runs inside the app, and a log line per batch from the logs pipeline's own exporter would feed
that pipeline. Under ``opentelemetry-instrument`` the only handler on the root logger is often
OpenTelemetry's own (it sends records to the logs pipeline, it prints nothing), so when no other
handler would show the line it goes to stderr as well: a refused token or a held store file must
not fail silently.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from collector.client.connection import DEFAULT_ADDRESS
from collector.client.otlp import OtlpClient
from collector.errors import ConfigError, HeraldError
from collector.otel.embedded import EmbeddedStore, open_store, release_store

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0

Request = TypeVar("Request", ExportTraceServiceRequest, ExportLogsServiceRequest)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the exporters send: a store file (``db``, embedded) or a server (``address``)."""

    db: str | None = None
    address: str | None = None
    token: str | None = None

    def describe(self) -> str:
        if self.db:
            return f"the store file {self.db} (embedded)"
        return f"the Herald server at {self.address or DEFAULT_ADDRESS}"


def resolve_target(
    address: str | None = None,
    token: str | None = None,
    db: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """The target from the arguments, else ``HERALD_DB`` / ``HERALD_ADDRESS`` /
    ``HERALD_TOKEN``. Raises ``ConfigError`` when both a file and a server are asked for."""
    env = os.environ if env is None else env
    token = token if token is not None else env.get("HERALD_TOKEN") or None
    if db and address:
        raise ConfigError("give a store file (db=) or a server address (address=), not both")
    if db:
        return Target(db=str(db))
    if address:
        return Target(address=address, token=token)
    env_db, env_address = env.get("HERALD_DB") or None, env.get("HERALD_ADDRESS") or None
    if env_db and env_address:
        raise ConfigError(
            f"HERALD_DB={env_db} and HERALD_ADDRESS={env_address} are both set: HERALD_DB writes "
            "the store file in this process (embedded), HERALD_ADDRESS sends to a server "
            "(remote); unset one"
        )
    if env_db:
        return Target(db=env_db)
    return Target(address=env_address, token=token)


def _shown(logger: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` on ``logger`` reaches a handler that shows it somewhere
    (any handler but OpenTelemetry's; with no handler at all, ``logging.lastResort`` prints)."""
    any_handler = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            any_handler = True
            if level >= handler.level and not type(handler).__module__.startswith("opentelemetry"):
                return True
        if not current.propagate:
            break
        current = current.parent
    return not any_handler


def report(message: str, *args: object) -> None:
    """Log a warning of the plugin; to stderr too when no handler would show it."""
    log.warning(message, *args)
    if log.isEnabledFor(logging.WARNING) and not _shown(log, logging.WARNING):
        print(f"herald exporter: {message % args}", file=sys.stderr)


class _Sender(Protocol):
    """One mode: sends a request and returns what the receiving end rejected (None: nothing)."""

    def traces(self, request: ExportTraceServiceRequest) -> str | None: ...

    def logs(self, request: ExportLogsServiceRequest) -> str | None: ...

    def close(self) -> None: ...


class _Remote:
    def __init__(self, target: Target, timeout: float) -> None:
        self._client = OtlpClient(target.address, target.token, timeout=timeout)

    def traces(self, request: ExportTraceServiceRequest) -> str | None:
        reply = self._client.export_traces(request)
        return reply.partial_success.error_message if reply.HasField("partial_success") else None

    def logs(self, request: ExportLogsServiceRequest) -> str | None:
        reply = self._client.export_logs(request)
        return reply.partial_success.error_message if reply.HasField("partial_success") else None

    def close(self) -> None:
        self._client.close()


class _Embedded:
    def __init__(self, target: Target, timeout: float) -> None:
        assert target.db
        self._store: EmbeddedStore = open_store(target.db)
        self._timeout = timeout

    def traces(self, request: ExportTraceServiceRequest) -> str | None:
        return self._store.traces(request, self._timeout)

    def logs(self, request: ExportLogsServiceRequest) -> str | None:
        return self._store.logs(request, self._timeout)

    def close(self) -> None:
        release_store(self._store)


class _Outlet:
    """What both exporters share: the sender of their mode, shutdown once, throttled logs."""

    def __init__(self, target: Target, timeout: float, what: str) -> None:
        self.target = target
        self._what = what
        self._sender: _Sender = (
            _Embedded(target, timeout) if target.db else _Remote(target, timeout)
        )
        self._lock = threading.Lock()
        self._closed = False
        self._last_failure: str | None = None

    def send(self, call: Callable[[Request], str | None], request: Request, count: int) -> bool:
        if self._closed:
            log.warning("Herald %s exporter is shut down; %d not sent", self._what, count)
            return False
        try:
            rejected = call(request)
        except HeraldError as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_failure:
                self._last_failure = message
                report(
                    "could not export %d %s to %s: %s",
                    count,
                    self._what,
                    self.target.describe(),
                    message,
                )
            return False
        self._last_failure = None
        if rejected:
            report("Herald did not store some %s: %s", self._what, rejected)
        return True

    def traces(self, request: ExportTraceServiceRequest) -> str | None:
        return self._sender.traces(request)

    def logs(self, request: ExportLogsServiceRequest) -> str | None:
        return self._sender.logs(request)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._sender.close()


class _HeraldExporter:
    """What both exporters share: the outlet to Herald (a server or an embedded store), its
    target, and the shutdown that releases it. Nothing is buffered here, so there is nothing
    to flush: every export is committed before it returns."""

    _what = "records"  # for the failure reports: "Herald did not store some <what>"

    def __init__(
        self,
        *,
        address: str | None = None,
        token: str | None = None,
        db: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._out = _Outlet(resolve_target(address, token, db), timeout, self._what)

    @property
    def target(self) -> Target:
        return self._out.target

    def shutdown(self) -> None:
        """Release the connection or the store file (the last user commits and closes it)."""
        self._out.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class HeraldSpanExporter(_HeraldExporter, SpanExporter):
    """Spans to Herald (remote or embedded: see the module docstring). Pair it with a
    ``BatchSpanProcessor``; ``export`` returns once the spans are committed."""

    _what = "spans"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        ok = self._out.send(self._out.traces, encode_spans(spans), len(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class HeraldLogExporter(_HeraldExporter, LogRecordExporter):
    """Log records to Herald, as ``HeraldSpanExporter`` does spans."""

    _what = "log records"

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if not batch:
            return LogRecordExportResult.SUCCESS
        ok = self._out.send(self._out.logs, encode_logs(batch), len(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE
