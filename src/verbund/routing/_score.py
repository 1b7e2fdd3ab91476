"""Verbund's routing policy: least expected wait, region, prefix-cache affinity.

For each candidate backend ``b`` (all numbers in seconds)::

    slots  = max_concurrency, or 1 when the config gives no capacity
    load   = max(requests this access point has in flight there,
                 running + waiting reported by the engine, if read < metrics_stale_after ago)
    svc    = ttft + tpot * n              one request's service time; n = max_tokens or default
    wait   = ttft + max(0, load + 1 - slots) * svc / slots       queueing behind the others
           + svc * 10 * max(0, cache_usage - 0.9)                KV cache nearly full

A backend returning from ejection or from being down offers only a share of its slots,
growing from 10 % to all over ``slow_start_seconds`` (slow start).
    score  = wait + (0 at the access point's home site, else remote_site_penalty)
                  + (0 in the institution's home region, else region_penalty)

``ttft`` and ``tpot`` are moving averages observed by this access point; a backend with
no observations yet borrows the median of the others (or 0.5 s and 30 ms). The region
terms are small on purpose: they decide between equally loaded sites, never against a
real difference in load.

Affinity: requests with the same conversation prefix (``RouteContext.affinity_key``) go
to the backend that rendezvous hashing picks for that key, as long as its utilisation is
at most ``affinity_load_factor`` times the mean (plus one request) and its score is within
one time to first token of the best (about what a warm prefix cache saves); otherwise to
the best score. Short one-off prompts carry no key. This keeps engines' prefix
caches warm without letting a hot conversation overload one backend.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from verbund.config import RoutingConfig
from verbund.federation import Backend
from verbund.routing._policy import RouteContext

DEFAULT_TTFT = 0.5
DEFAULT_TPOT = 0.03


@dataclass(frozen=True, slots=True)
class Estimate:
    backend: Backend
    load: float
    slots: int
    ttft: float
    service: float
    wait: float
    score: float

    @property
    def utilisation(self) -> float:
        return self.load / self.slots


def load_of(b: Backend, now: float, stale_after: float) -> float:
    load = float(b.outstanding)
    if now - b.engine.scraped_at < stale_after:
        load = max(load, b.engine.running + b.engine.waiting)
    return load


def estimate(
    candidates: Sequence[Backend], ctx: RouteContext, cfg: RoutingConfig, now: float
) -> list[Estimate]:
    """Expected wait and score of each candidate; pure, for tests and the benchmark."""
    known_ttft = [b.latency.ttft for b in candidates if b.latency.ttft is not None]
    known_tpot = [b.latency.tpot for b in candidates if b.latency.tpot is not None]
    prior_ttft = statistics.median(known_ttft) if known_ttft else DEFAULT_TTFT
    prior_tpot = statistics.median(known_tpot) if known_tpot else DEFAULT_TPOT
    n_tokens = ctx.max_tokens or cfg.default_max_tokens
    out = []
    for b in candidates:
        ttft = b.latency.ttft if b.latency.ttft is not None else prior_ttft
        tpot = b.latency.tpot if b.latency.tpot is not None else prior_tpot
        slots = b.config.max_concurrency or 1
        if cfg.slow_start_seconds > 0:
            # slow start: a returning backend offers a growing share of its slots
            ramp = min(1.0, max(0.1, (now - b.returned_at) / cfg.slow_start_seconds))
            slots = max(1, round(slots * ramp))
        load = load_of(b, now, cfg.metrics_stale_after)
        service = ttft + tpot * n_tokens
        wait = ttft + max(0.0, load + 1 - slots) * service / slots
        if now - b.engine.scraped_at < cfg.metrics_stale_after:
            wait += service * 10 * max(0.0, b.engine.cache_usage - 0.9)
        score = wait
        if b.site.name != ctx.home_site:
            score += cfg.remote_site_penalty
        if not ctx.home_region or b.site.region != ctx.home_region:
            score += cfg.region_penalty
        out.append(Estimate(b, load, slots, ttft, service, wait, score))
    return out


def rendezvous_weight(key: str, backend: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{backend}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class ScorePolicy:
    def __init__(self, cfg: RoutingConfig) -> None:
        self._cfg = cfg

    def rank(self, candidates: Sequence[Backend], ctx: RouteContext) -> list[Backend]:
        ests = estimate(candidates, ctx, self._cfg, ctx.now)
        ests.sort(key=lambda e: (e.score, e.backend.name))
        if not ests:
            return []
        if self._cfg.affinity and ctx.affinity_key and len(ests) > 1:
            chosen = self._affine(ests, ctx.affinity_key)
            if chosen is not None and chosen is not ests[0]:
                ests.remove(chosen)
                ests.insert(0, chosen)
        return [e.backend for e in ests]

    def _affine(self, ests: list[Estimate], key: str) -> Estimate | None:
        mean_util = sum(e.utilisation for e in ests) / len(ests)
        best = ests[0]
        for e in sorted(ests, key=lambda e: rendezvous_weight(key, e.backend.name), reverse=True):
            bound = self._cfg.affinity_load_factor * mean_util + 1 / e.slots
            if e.utilisation <= bound and e.score <= best.score + best.ttft:
                return e
        return None
