"""Choosing a routing policy by name (``[routing] policy`` in the config)."""

from __future__ import annotations

from verbund.config import RoutingConfig
from verbund.routing._policy import (
    LeastOutstanding,
    PolicyName,
    Random,
    RoundRobin,
    RoutingPolicy,
)
from verbund.routing._score import ScorePolicy


def make_policy(name: PolicyName | str, cfg: RoutingConfig) -> RoutingPolicy:
    chosen = PolicyName(name)
    if chosen is PolicyName.score:
        return ScorePolicy(cfg)
    factories: dict[PolicyName, type[RoutingPolicy]] = {
        PolicyName.least_outstanding: LeastOutstanding,
        PolicyName.round_robin: RoundRobin,
        PolicyName.random: Random,
    }
    return factories[chosen]()
