"""Sites, backends and models at run time, their upstream clients and their health."""

from verbund.federation._agent import (
    CATALOGUE_PATH,
    ERASURE_PATH,
    INSTITUTION_HEADER,
    RECEIPT_HEADER,
    RELAY_PREFIX,
    STATE_ACTIONS,
    TRUST_CHECKPOINTS_PATH,
    USAGE_STATEMENTS_PATH,
    AgentClient,
    agent_error,
    parse_catalogue,
)
from verbund.federation._backend import Backend, EngineLoad, InFlight, LatencyStats
from verbund.federation._catalogue import (
    AcceptedCatalogue,
    AnnouncedBackend,
    AnnouncedModel,
    AnnouncedSite,
    OnDemandModel,
    SiteCatalogue,
    accepted,
)
from verbund.federation._dialect import (
    LLAMA_CPP_PYTHON,
    OPENAI,
    chat_body_for,
    streams_unstreamed,
)
from verbund.federation._federation import Federation
from verbund.federation._health import Failure, HealthTracker, Probe, request_key
from verbund.federation._lifecycle import SiteLifecycle
from verbund.federation._metrics import (
    LOAD_PATH,
    MetricsScraper,
    apply_load_report,
    engine_samples,
    load_report,
    parse_engine_metrics,
)
from verbund.federation._node_time import NodeTimeCollector
from verbund.federation._prober import Prober
from verbund.federation._site import Site
from verbund.federation._sync import CatalogueSync, SiteSync
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
    "CATALOGUE_PATH",
    "ERASURE_PATH",
    "INSTITUTION_HEADER",
    "LLAMA_CPP_PYTHON",
    "LOAD_PATH",
    "OPENAI",
    "RECEIPT_HEADER",
    "RELAY_PREFIX",
    "STATE_ACTIONS",
    "TRUST_CHECKPOINTS_PATH",
    "USAGE_STATEMENTS_PATH",
    "AcceptedCatalogue",
    "AgentClient",
    "AnnouncedBackend",
    "AnnouncedModel",
    "AnnouncedSite",
    "Backend",
    "CatalogueSync",
    "EngineLoad",
    "Failure",
    "Federation",
    "HealthTracker",
    "InFlight",
    "LatencyStats",
    "MetricsScraper",
    "NodeTimeCollector",
    "OnDemandModel",
    "Probe",
    "Prober",
    "SideClient",
    "Site",
    "SiteCatalogue",
    "SiteLifecycle",
    "SiteSync",
    "TransportFactory",
    "Upstream",
    "UpstreamBroken",
    "UpstreamFailed",
    "UpstreamPool",
    "UpstreamRefused",
    "UpstreamResponse",
    "UpstreamTimedOut",
    "accepted",
    "agent_error",
    "apply_load_report",
    "chat_body_for",
    "engine_samples",
    "load_report",
    "parse_catalogue",
    "parse_engine_metrics",
    "request_key",
    "streams_unstreamed",
]
