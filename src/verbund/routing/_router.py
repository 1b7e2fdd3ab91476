"""The router: from a model name and a request's policy to an ordered list of backends.

Steps: backends serving the model -> sites the data policy allows (hard filter) ->
sites accepting new requests (lifecycle) -> backends available (health) -> ranked by the
routing policy. When nothing is left the error names why each site was excluded.
"""

from __future__ import annotations

import time
from dataclasses import replace

from verbund.config import RoutingConfig
from verbund.errors import ModelNotFound, NoBackendAvailable, PolicyViolation
from verbund.federation import Backend, Federation
from verbund.policy import RequestPolicy, describe_exclusions, split_sites
from verbund.routing._policy import RouteContext, RoutingPolicy
from verbund.routing._score import load_of


class Router:
    def __init__(
        self, federation: Federation, policy: RoutingPolicy, cfg: RoutingConfig | None = None
    ) -> None:
        self._federation = federation
        self._policy = policy
        self._cfg = cfg or RoutingConfig()

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
        sites, excluded = split_sites(self._federation.sites_for(model), request_policy)
        if not sites:
            raise PolicyViolation(
                f"No site may process data of class '{request_policy.data_class.value}' "
                f"for this request; model '{model}' is excluded by policy at every site "
                f"({describe_exclusions(excluded, [])}).",
                param="model",
            )
        unavailable: list[tuple[str, str]] = []
        candidates: list[Backend] = []
        for site in sites:
            if not site.accepts_new_requests:
                unavailable.append((site.name, f"site is in state {site.state.value}"))
                continue
            up = [b for b in site.backends if b.serves(model) and b.available(now)]
            if not up:
                unavailable.append((site.name, "no healthy backend"))
            candidates += up
        if not candidates:
            raise NoBackendAvailable(
                f"No compliant backend for model '{model}' is available now "
                f"({describe_exclusions(excluded, unavailable)}). Try again later.",
                headers={"retry-after": "5"},
            )
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

    def _spare_capacity(self, candidates: list[Backend], now: float) -> list[Backend]:
        """Batch work only takes backends below the utilisation threshold."""
        threshold = self._cfg.batch_utilisation_threshold
        return [
            b
            for b in candidates
            if load_of(b, now, self._cfg.metrics_stale_after) / (b.config.max_concurrency or 1)
            < threshold
        ]
