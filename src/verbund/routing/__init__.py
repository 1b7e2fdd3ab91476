"""Routing decisions: which backend, in which order. Pure; no HTTP here."""

from verbund.routing._budget import RetryBudget
from verbund.routing._deadline import try_deadline
from verbund.routing._policy import (
    LeastOutstanding,
    PolicyName,
    Random,
    RoundRobin,
    RouteContext,
    RoutingPolicy,
)
from verbund.routing._registry import make_policy
from verbund.routing._router import Router
from verbund.routing._score import Estimate, ScorePolicy, estimate, rendezvous_weight

__all__ = [
    "Estimate",
    "LeastOutstanding",
    "PolicyName",
    "Random",
    "RetryBudget",
    "RoundRobin",
    "RouteContext",
    "Router",
    "RoutingPolicy",
    "ScorePolicy",
    "estimate",
    "make_policy",
    "rendezvous_weight",
    "try_deadline",
]
