"""What an access point tells its operators: metrics, structured logs, traces."""

from verbund.telemetry._logs import JsonFormatter, Pseudonymizer, log_access
from verbund.telemetry._metrics import ClockSkewCollector, Metrics
from verbund.telemetry._tracing import make_tracer

__all__ = [
    "ClockSkewCollector",
    "JsonFormatter",
    "Metrics",
    "Pseudonymizer",
    "log_access",
    "make_tracer",
]
