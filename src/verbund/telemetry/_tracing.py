"""Optional OpenTelemetry tracing: spans for authentication, routing and upstream tries.

Off unless ``[telemetry] otlp_endpoint`` is set (and the ``otel`` extra installed). Span
attributes are ids, names and numbers only: never prompt or completion text, never keys.
The tracer provider belongs to the access point, not to the process.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, Tracer

log = logging.getLogger("verbund.tracing")


def make_tracer(endpoint: str, service_name: str) -> tuple[Tracer, object | None]:
    """(tracer, provider to shut down) — a no-op tracer when tracing is off."""
    if not endpoint:
        return NoOpTracer(), None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.error("telemetry.otlp_endpoint is set but the otel extra is not installed")
        return NoOpTracer(), None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider.get_tracer("verbund"), provider


def span(
    tracer: Tracer, name: str, attributes: dict[str, str | int | bool] | None = None
) -> AbstractContextManager[Span]:
    """A span that records no exception text: error messages may echo client input."""
    return tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    )


__all__ = ["NoOpTracer", "Tracer", "make_tracer", "span", "trace"]
