"""Sites, backends and models at run time, their upstream clients and their health."""

from verbund.federation._backend import Backend, EngineLoad, InFlight, LatencyStats
from verbund.federation._dialect import (
    LLAMA_CPP_PYTHON,
    OPENAI,
    chat_body_for,
    streams_unstreamed,
)
from verbund.federation._federation import Federation
from verbund.federation._health import Failure, HealthTracker, Probe, request_key
from verbund.federation._lifecycle import SiteLifecycle
from verbund.federation._metrics import MetricsScraper, parse_engine_metrics
from verbund.federation._prober import Prober
from verbund.federation._site import Site
from verbund.federation._upstream import (
    SideClient,
    TransportFactory,
    Upstream,
    UpstreamBroken,
    UpstreamFailed,
    UpstreamPool,
    UpstreamRefused,
    UpstreamResponse,
    UpstreamTimedOut,
)

__all__ = [
    "LLAMA_CPP_PYTHON",
    "OPENAI",
    "Backend",
    "EngineLoad",
    "Failure",
    "Federation",
    "HealthTracker",
    "InFlight",
    "LatencyStats",
    "MetricsScraper",
    "Probe",
    "Prober",
    "SideClient",
    "Site",
    "SiteLifecycle",
    "TransportFactory",
    "Upstream",
    "UpstreamBroken",
    "UpstreamFailed",
    "UpstreamPool",
    "UpstreamRefused",
    "UpstreamResponse",
    "UpstreamTimedOut",
    "chat_body_for",
    "parse_engine_metrics",
    "request_key",
    "streams_unstreamed",
]
