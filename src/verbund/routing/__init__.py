"""Routing decisions: which backend, in which order. Pure; no HTTP here."""

from verbund.routing._policy import (
    LeastOutstanding,
    PolicyName,
    RouteContext,
    RoutingPolicy,
    make_policy,
)
from verbund.routing._router import Router

__all__ = [
    "LeastOutstanding",
    "PolicyName",
    "RouteContext",
    "Router",
    "RoutingPolicy",
    "make_policy",
]
