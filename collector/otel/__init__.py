"""Herald as an OpenTelemetry SDK exporter plugin.

``OTEL_TRACES_EXPORTER=herald`` / ``OTEL_LOGS_EXPORTER=herald`` (entry points in
pyproject.toml) pick ``HeraldSpanExporter`` / ``HeraldLogExporter`` (``exporters.py``) in the
SDK's auto-configuration and under ``opentelemetry-instrument``; ``register`` (``register.py``)
sets the SDK up in one call. Remote mode sends to a server, embedded mode (``HERALD_DB``) writes
the store file in-process (``embedded.py``). Needs the ``herald[otel]`` extra (the SDK).
docs/integrations.md has the recipes.
"""

from collector.otel.exporters import HeraldLogExporter, HeraldSpanExporter, Target, resolve_target
from collector.otel.register import register, register_logs

__all__ = [
    "HeraldLogExporter",
    "HeraldSpanExporter",
    "Target",
    "register",
    "register_logs",
    "resolve_target",
]
