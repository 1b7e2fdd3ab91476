"""Routing policies: pure functions from candidates and their stats to an order of tries.

Every policy implements :class:`RoutingPolicy`. The router has already removed what may
not or cannot serve (policy, lifecycle, health); a policy only orders what is left.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from verbund.federation import Backend


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a policy may know about the request besides the model."""

    home_site: str = ""
    home_region: str = ""
    affinity_key: str = ""  # hash of the conversation prefix; "" = no affinity
    max_tokens: int | None = None
    priority: str = "interactive"  # interactive | batch
    now: float = 0.0  # monotonic time of the decision
    data_class: str = ""  # the request's data class (sites' agents check it too)
    # the serving site must sign a processing receipt (X-Verbund-Receipt: required, or
    # the institution's require_receipts): only sites that can sign are planned
    receipt: bool = False


class RoutingPolicy(Protocol):
    def rank(self, candidates: Sequence[Backend], ctx: RouteContext) -> list[Backend]:
        """All candidates, best first; the proxy tries them in this order."""
        ...


class PolicyName(enum.StrEnum):
    score = "score"
    least_outstanding = "least_outstanding"
    round_robin = "round_robin"
    random = "random"


class LeastOutstanding:
    """Fewest requests in flight relative to capacity; the home site wins ties.

    Load is ``outstanding / max_concurrency`` where the backend declares a capacity, and
    the raw count otherwise, so a large server is not starved by a small one.
    """

    def rank(self, candidates: Sequence[Backend], ctx: RouteContext) -> list[Backend]:
        def key(b: Backend) -> tuple[float, int, int, str]:
            cap = b.config.max_concurrency
            load = b.outstanding / cap if cap else float(b.outstanding)
            not_home_site = 0 if b.site.name == ctx.home_site else 1
            not_home_region = 0 if ctx.home_region and b.site.region == ctx.home_region else 1
            return (load, not_home_site, not_home_region, b.name)

        return sorted(candidates, key=key)


class RoundRobin:
    """Each request starts one further along the list (a baseline for benchmarks)."""

    def __init__(self) -> None:
        self._next = 0

    def rank(self, candidates: Sequence[Backend], ctx: RouteContext) -> list[Backend]:
        ordered = sorted(candidates, key=lambda b: b.name)
        if not ordered:
            return []
        i = self._next % len(ordered)
        self._next += 1
        return ordered[i:] + ordered[:i]


class Random:
    """A random order (a baseline for benchmarks)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def rank(self, candidates: Sequence[Backend], ctx: RouteContext) -> list[Backend]:
        ordered = list(candidates)
        self._rng.shuffle(ordered)
        return ordered
