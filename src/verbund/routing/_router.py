"""The router: from a model name and a request's policy to an ordered list of backends.

Steps: backends serving the model -> sites the data policy allows (hard filter) ->
sites accepting new requests (lifecycle) -> backends available (health) -> ranked by the
routing policy. When nothing is left the error names why each site was excluded.

Panic routing (Envoy's panic threshold): when fewer than ``routing.panic_threshold`` of
the backends left after policy and lifecycle look healthy, the access point's view of
health is more likely wrong than most of the federation broken (probes time out when the
access point itself is starved, a stalled peer makes others look slow). Then the plan
holds all of them: the healthy ones first, then the rest, so a request is tried rather
than refused. Policy and lifecycle are never relaxed, and backends that refused a
connection (nothing listens) or asked to be left alone (429) stay out.

Large federations: the candidates are gathered in one pass over the model's sites
(policy decisions are cached per model and request policy: they depend on the sites'
configuration only), and when more than ``routing.max_ranked`` qualify the policy ranks a
sample of them rather than all (the cost of scoring grows with the candidates, and the
proxy tries three at most): every backend of the home site, a window of the list chosen
by the affinity key (so a conversation keeps meeting the same backends), and random
others — the power of many choices keeps the load even.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from dataclasses import replace

from verbund.config import RoutingConfig
from verbund.errors import ModelNotFound, NoBackendAvailable, PolicyViolation
from verbund.federation import Backend, Federation, Site
from verbund.policy import RequestPolicy, describe_exclusions, split_sites
from verbund.routing._policy import RouteContext, RoutingPolicy
from verbund.routing._score import load_of

log = logging.getLogger("verbund.routing")

PANIC_LOG_SECONDS = 10.0
SPLIT_CACHE = 4096


class Router:
    def __init__(
        self, federation: Federation, policy: RoutingPolicy, cfg: RoutingConfig | None = None
    ) -> None:
        self._federation = federation
        self._policy = policy
        self._cfg = cfg or RoutingConfig()
        self._panic_logged: dict[str, float] = {}
        self._splits: dict[tuple[str, RequestPolicy], tuple[list[Site], dict[str, str]]] = {}
        self._rng = random.Random()

    def plan(
        self,
        model: str,
        request_policy: RequestPolicy,
        ctx: RouteContext,
    ) -> list[Backend]:
        if model not in self._federation.models:
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        if not ctx.now:
            ctx = replace(ctx, now=time.monotonic())
        now = ctx.now
        split = self._splits.get((model, request_policy))
        if split is None:
            if len(self._splits) >= SPLIT_CACHE:
                self._splits.clear()
            split = split_sites(self._federation.sites_for(model), request_policy)
            self._splits[(model, request_policy)] = split
        sites, excluded = split
        if not sites:
            raise PolicyViolation(
                f"No site may process data of class '{request_policy.data_class.value}' "
                f"for this request; model '{model}' is excluded by policy at every site "
                f"({describe_exclusions(excluded, [])}).",
                param="model",
            )
        unavailable: list[tuple[str, str]] = []
        candidates: list[Backend] = []
        home: list[Backend] = []
        serving = 0
        for site in sites:
            if not site.accepts_new_requests:
                unavailable.append((site.name, f"site is in state {site.state.value}"))
                continue
            here = self._federation.backends_at(model, site.name)
            serving += len(here)
            up = [b for b in here if b.available(now)]
            if not up:
                unavailable.append((site.name, "no healthy backend"))
            elif site.name == ctx.home_site:
                home = up
            candidates += up
        if len(candidates) < self._cfg.panic_threshold * serving:
            panic = self._panic(model, sites, candidates, serving, now)
            if panic:
                return self._rank(candidates, ctx, now, model) + self._rank(panic, ctx, now, model)
        if not candidates:
            raise NoBackendAvailable(
                f"No compliant backend for model '{model}' is available now "
                f"({describe_exclusions(excluded, unavailable)}). Try again later.",
                headers={"retry-after": "5"},
            )
        if self._cfg.max_ranked and len(candidates) > self._cfg.max_ranked:
            candidates = self._sample(candidates, home, ctx)
        return self._rank(candidates, ctx, now, model)

    def _sample(
        self, candidates: list[Backend], home: list[Backend], ctx: RouteContext
    ) -> list[Backend]:
        """At most ``max_ranked`` of the candidates: home site, affinity window, random."""
        k = self._cfg.max_ranked
        chosen: dict[int, Backend] = {id(b): b for b in home[:k]}
        n = len(candidates)
        if ctx.affinity_key and len(chosen) < k:
            start = zlib.crc32(ctx.affinity_key.encode()) % n
            for i in range(start, start + min(n, max(1, (k - len(chosen)) // 2))):
                b = candidates[i % n]
                chosen[id(b)] = b
        if len(chosen) < k:
            for b in self._rng.sample(candidates, min(n, k - len(chosen) + len(home))):
                if len(chosen) >= k:
                    break
                chosen[id(b)] = b
        return list(chosen.values())

    def _rank(
        self, candidates: list[Backend], ctx: RouteContext, now: float, model: str = ""
    ) -> list[Backend]:
        if not candidates:
            return []
        # a backend with requests in flight and no bytes back lately is probably hung:
        # route around it while anything else is left (it is not down: no probe said so)
        moving = [b for b in candidates if not b.stalled(now, self._cfg.stall_seconds)]
        if moving:
            candidates = moving
        if ctx.priority == "batch":
            candidates = self._spare_capacity(candidates, now)
            if not candidates:
                raise NoBackendAvailable(
                    f"Every backend for model '{model}' is busy with interactive work; "
                    "batch work waits for spare capacity.",
                    code="capacity_reserved",
                    headers={"retry-after": "1"},
                )
        return self._policy.rank(candidates, ctx)

    def _panic(
        self,
        model: str,
        sites: list[Site],
        healthy: list[Backend],
        serving: int,
        now: float,
    ) -> list[Backend]:
        """The backends panic routing adds: not healthy by our view, but worth a try."""
        extra = [
            b
            for site in sites
            if site.accepts_new_requests
            for b in site.backends
            if b.serves(model) and not b.available(now) and not b.refused and now >= b.busy_until
        ]
        if extra and now - self._panic_logged.get(model, -1e9) >= PANIC_LOG_SECONDS:
            self._panic_logged[model] = now
            log.warning(
                "panic routing for model %s: %d of %d backends healthy, below "
                "panic_threshold %g; routing to all %d not known dead",
                model,
                len(healthy),
                serving,
                self._cfg.panic_threshold,
                len(healthy) + len(extra),
            )
        return extra

    def _spare_capacity(self, candidates: list[Backend], now: float) -> list[Backend]:
        """Batch work only takes backends below the utilisation threshold."""
        threshold = self._cfg.batch_utilisation_threshold
        return [
            b
            for b in candidates
            if load_of(b, now, self._cfg.metrics_stale_after) / (b.config.max_concurrency or 1)
            < threshold
        ]
