"""Sites, backends and models at run time, their upstream clients and their health."""

from verbund.federation._backend import Backend
from verbund.federation._federation import Federation
from verbund.federation._health import Failure, HealthTracker, Prober
from verbund.federation._site import Site
from verbund.federation._upstream import TransportFactory, UpstreamPool

__all__ = [
    "Backend",
    "Failure",
    "Federation",
    "HealthTracker",
    "Prober",
    "Site",
    "TransportFactory",
    "UpstreamPool",
]
