"""The Python SDK: ``emit_event`` with Prefect's signature and behaviour (SPEC §9, P§3.1).

Events are queued and sent in batches by a background thread to ``HERALD_ADDRESS`` (gRPC, with
``HERALD_TOKEN``), and flushed at interpreter exit. ``emit_event`` returns the ``Event`` it
queued and never raises into user code except ``EventTooLarge``. Called inside an active
OpenTelemetry span it adds that span and its trace as related resources (roles ``span`` and
``trace``, ids as the OTLP mapping makes them), as Prefect's worker adds the current flow run.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from collector.domain.events import Event, Limits
from collector.domain.ids import uuid7
from collector.errors import Busy, EventTooLarge, HeraldError, ServerUnreachable

log = logging.getLogger(__name__)

_STOP: dict[str, Any] = {}  # sentinel that ends the sending thread (compared by identity)

# Prefect's TIGHT_TIMING: `follows` is only kept when the two events are this close.
TIGHT_TIMING = timedelta(minutes=5)


class EventsWorker:
    """A background sender: bounded queue → batches of up to ``batch_size`` → ``Emit``."""

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        *,
        batch_size: int = 1000,
        max_queue: int = 100_000,
        flush_interval: float = 0.1,
    ) -> None:
        self._address = address
        self._token = token
        self._batch_size = batch_size
        self._interval = flush_interval
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._unsent = 0
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="herald-events", daemon=True)
        self._thread.start()

    def send(self, item: dict[str, Any]) -> None:
        """Queue one event (JSON shape); drops it with a warning if the queue is full."""
        if self._stopped:
            log.warning("Herald events worker is closed; dropping event %s", item.get("id"))
            return
        try:
            with self._lock:
                self._queue.put_nowait(item)
                self._unsent += 1
        except queue.Full:
            log.warning("Herald events queue is full; dropping event %s", item.get("id"))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was sent (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unsent:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush, then end the sending thread."""
        self.flush(timeout)
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _take_batch(self) -> list[dict[str, Any]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self._interval
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        from collector.client.remote import HeraldClient

        client = HeraldClient(self._address, self._token, timeout=10.0)
        while True:
            batch = self._take_batch()
            if batch[-1] is _STOP:
                batch.pop()
                if batch:
                    self._deliver(client, batch)
                client.close()
                return
            self._deliver(client, batch)
            with self._lock:
                self._unsent -= len(batch)
                self._lock.notify_all()

    def _address_hint(self) -> str:
        """What an SDK user changes to reach the server (not the CLI's ``--address``)."""
        if self._address:
            return "; check the address given to EventsWorker(address=...)"
        return (
            "; set the HERALD_ADDRESS environment variable to the server's gRPC host:port "
            "(or pass worker=EventsWorker(address=...) to emit_event)"
        )

    def _deliver(self, client: Any, batch: list[dict[str, Any]]) -> None:
        delay = 0.2
        for attempt in range(5):
            try:
                _, errors = client.emit(batch)
                for index, message in errors:
                    log.warning("Herald rejected event %s: %s", batch[index].get("id"), message)
                return
            except (Busy, ServerUnreachable) as exc:
                if attempt == 4:
                    log.warning(
                        "could not send %d event(s) to Herald: %s%s",
                        len(batch),
                        exc,
                        self._address_hint() if isinstance(exc, ServerUnreachable) else "",
                    )
                    return
                time.sleep(delay)
                delay *= 2
            except HeraldError as exc:
                log.warning("could not send %d events to Herald: %s", len(batch), exc)
                return


class _DefaultWorker:
    """Holds the process-wide worker that the free function ``emit_event`` needs.

    One sender per process is the point of the SDK (as Prefect's EventsWorker singleton); it is
    created on first use and flushed at exit, and tests can build their own ``EventsWorker``.
    """

    def __init__(self) -> None:
        self._worker: EventsWorker | None = None
        self._lock = threading.Lock()

    def get(self) -> EventsWorker:
        with self._lock:
            if self._worker is None:
                self._worker = EventsWorker()
                atexit.register(self._worker.flush)
            return self._worker


_default = _DefaultWorker()


def _otel_related() -> list[dict[str, str]]:
    try:
        from opentelemetry import trace
    except ImportError:
        return []
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return []
    trace_id = f"{ctx.trace_id:032x}"
    return [
        {
            "prefect.resource.id": f"otel.span.{ctx.span_id:016x}",
            "prefect.resource.role": "span",
            "otel.trace_id": trace_id,
        },
        {"prefect.resource.id": f"otel.trace.{trace_id}", "prefect.resource.role": "trace"},
    ]


def emit_event(
    event: str,
    resource: dict[str, str],
    occurred: datetime | None = None,
    related: list[dict[str, str]] | None = None,
    payload: dict[str, Any] | None = None,
    id: UUID | None = None,
    follows: Event | None = None,
    *,
    worker: EventsWorker | None = None,
    limits: Limits | None = None,
) -> Event | None:
    """Emit one event to Herald in the background; returns it (or None if it could not be built).

    Raises only ``EventTooLarge``. ``follows`` is kept only when both events occurred within
    five minutes of each other.
    """
    try:
        occurred = occurred or datetime.now(UTC)
        related = list(related or [])
        seen = {r.get("prefect.resource.id") for r in related}
        related += [r for r in _otel_related() if r["prefect.resource.id"] not in seen]
        follows_id = None
        if follows is not None and follows.occurred is not None:
            ev_occurred = occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)
            if abs(ev_occurred - follows.occurred) <= TIGHT_TIMING:
                follows_id = follows.id
        ev = Event(
            occurred=occurred,
            event=event,
            resource=resource,
            related=related,
            payload=payload or {},
            id=id or uuid7(),
            follows=follows_id,
        )
        ev.check(limits or Limits())
        (worker or _default.get()).send(ev.to_dict())
        return ev
    except EventTooLarge:
        raise
    except Exception:
        log.exception("Error emitting event")
        return None
