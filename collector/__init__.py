"""Herald: an OpenTelemetry-compatible event collector (server, store, mapping, SDK).

``from collector import emit_event`` is the Python SDK entry point.
"""

from collector.domain.events import Event, ReceivedEvent
from collector.errors import EventTooLarge, HeraldError
from collector.sdk import EventsWorker, emit_event

__version__ = "0.1.0"
__all__ = ["Event", "EventTooLarge", "EventsWorker", "HeraldError", "ReceivedEvent", "emit_event"]
