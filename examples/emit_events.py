"""Emit native events with the Python SDK (Prefect's `emit_event` signature).

    HERALD_ADDRESS=127.0.0.1:4317 .venv/bin/python examples/emit_events.py

Inside an OpenTelemetry span, the span and its trace are added as related resources.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from collector import emit_event

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("examples.emit_events")

shipped = emit_event(
    "app.order.shipped",
    resource={"prefect.resource.id": "app.order.8812", "prefect.resource.name": "Order 8812"},
    related=[{"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}],
    payload={"carrier": "DHL"},
)
with tracer.start_as_current_span("deliver"):
    delivered = emit_event(
        "app.order.delivered",
        resource={"prefect.resource.id": "app.order.8812", "prefect.resource.name": "Order 8812"},
        follows=shipped,
    )
assert shipped is not None and delivered is not None
print(shipped.id)
print(delivered.id)
# Nothing else to do: queued events are flushed when the interpreter exits.
