"""Requests for on-demand models that are not running: start them, wait, or say when.

A request for a model with no available backend at any compliant site, where some
compliant active site starts it on demand, asks that site's agent to start it and waits
(up to ``routing.cold_start_wait``, at most ``routing.cold_start_queue`` requests per
model) until a backend of it appears in a catalogue; then it is routed as usual. A model
warm at one compliant site never waits for a cold one (it is not cold). If nothing is
ready in time the answer is 503 ``model_starting`` with ``Retry-After`` from the site's
expected start time. Only compliant sites are ever asked: policy filters first.

The same component reports each on-demand model's demand to the agents once a second
(requests waiting, requests in flight per instance, seconds since the last request), from
which the agents decide scale-up, idleness and draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from verbund.config import RoutingConfig
from verbund.errors import ApiError, ModelStarting, NoBackendAvailable
from verbund.federation import AgentClient, Federation, Site
from verbund.policy import RequestPolicy, split_sites

__all__ = ["ColdStart"]

log = logging.getLogger("verbund.admission")

REPORT_SECONDS = 1.0
QUIET_AFTER = 30.0  # a model without requests for this long is reported no more


class ColdStart:
    def __init__(
        self,
        federation: Federation,
        agents: dict[str, AgentClient],
        applied: Callable[[], asyncio.Event],
        cfg: RoutingConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._federation = federation
        self._agents = agents
        self._applied = applied  # the catalogue sync's "a catalogue was applied" event
        self._cfg = cfg
        # one clock for everything here, the federation's: backends' availability, the
        # wait's deadline and the idle time reported to the agents
        self._clock = clock
        self.waiting: dict[tuple[str, str], int] = {}  # (model, site) -> requests waiting
        self.last_request: dict[str, float] = {}
        self._reported: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}

    # -- the request's side -----------------------------------------------------------------

    def _sites(self, model: str, policy: RequestPolicy) -> list[Site]:
        sites, _ = split_sites(self._federation.sites_for(model), policy)
        return [s for s in sites if s.accepts_new_requests]

    def _available(
        self, model: str, sites: list[Site], now: float, failed: frozenset[str] = frozenset()
    ) -> bool:
        return any(
            b.available(now) and b.name not in failed
            for s in sites
            for b in self._federation.backends_at(model, s.name)
        )

    def starts(self, model: str) -> bool:
        """Whether some site with an agent starts ``model`` on demand: the one check a
        request for any other model (every warm request) pays, before any policy."""
        return any(
            model in s.on_demand and s.name in self._agents
            for s in self._federation.sites_for(model)
        )

    def cold(self, model: str, policy: RequestPolicy, failed: frozenset[str] = frozenset()) -> bool:
        """True if the request would wait for a start: nothing available at a compliant
        site (``failed`` backends do not count), and some compliant site starts the model
        on demand."""
        if not self.starts(model):
            return False
        sites = self._sites(model, policy)
        if self._available(model, sites, self._clock(), failed):
            return False
        return any(model in s.on_demand and s.name in self._agents for s in sites)

    async def ensure(
        self, model: str, policy: RequestPolicy, failed: frozenset[str] = frozenset()
    ) -> None:
        """Return once a compliant backend of ``model`` is available (at once if one is),
        or raise 503 ``model_starting``.

        ``failed``: the backends a request was already sent to and that failed before it
        got a byte (an instance whose job ended under it). They do not count, so the
        request waits for a replacement as a cold-start request does, instead of failing."""
        if not self.starts(model):
            return  # not an on-demand model (nor a name the client made up): nothing kept
        self.last_request[model] = self._clock()
        if not self.cold(model, policy, failed):
            return
        order = {"ready": 0, "starting": 1, "stopped": 2}
        candidates = sorted(
            (s for s in self._sites(model, policy) if model in s.on_demand),
            key=lambda s: order.get(s.on_demand[model].status, 3),
        )
        expected = min(s.on_demand[model].expected_start_seconds for s in candidates)
        if sum(n for (m, _), n in self.waiting.items() if m == model) >= self._cfg.cold_start_queue:
            raise _starting(model, "its start queue is full", expected)
        site = await self._ask(model, candidates)
        key = (model, site.name)
        self.waiting[key] = self.waiting.get(key, 0) + 1
        began = self._clock()
        try:
            deadline = began + self._cfg.cold_start_wait
            sites = self._sites(model, policy)
            while not self._available(model, sites, self._clock(), failed):
                left = deadline - self._clock()
                if left <= 0:
                    waited = self._clock() - began
                    raise _starting(model, f"it is starting at {site.name}", expected - waited)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._applied().wait(), min(left, REPORT_SECONDS))
                sites = self._sites(model, policy)
        finally:
            self.waiting[key] -= 1
            if not self.waiting[key]:
                del self.waiting[key]

    async def gone(self, backends: frozenset[str], within: float) -> bool:
        """Whether ``backends`` leave the federation (their sites' catalogues drop them:
        the instance's job ended) within ``within`` seconds. A request that failed at an
        on-demand instance waits for a replacement only if its site says it is gone."""
        deadline = self._clock() + within
        while backends & self._federation.backends.keys():
            left = deadline - self._clock()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied().wait(), min(left, REPORT_SECONDS))
        return True

    async def _ask(self, model: str, candidates: list[Site]) -> Site:
        """The first compliant site whose agent takes the start."""
        why: list[str] = []
        for site in candidates:
            agent = self._agents.get(site.name)
            if agent is None:
                continue
            try:
                await agent.report_demand(model, waiting=1, idle_seconds=0.0)
                return site
            except ApiError as exc:
                why.append(f"{site.name}: {exc.message}")
                log.warning("site %s cannot start %s: %s", site.name, model, exc.code)
        raise NoBackendAvailable(
            f"No compliant site could start model '{model}' ({'; '.join(why) or 'none'}).",
            headers={"retry-after": "30"},
        )

    # -- reporting demand -------------------------------------------------------------------

    def _reports(self) -> list[tuple[str, str, dict[str, Any]]]:
        now = self._clock()
        out: list[tuple[str, str, dict[str, Any]]] = []
        for site in self._federation.sites.values():
            if site.name not in self._agents:
                continue
            for model in site.on_demand:
                last = self.last_request.get(model)
                waiting = self.waiting.get((model, site.name), 0)
                flight = {
                    b.name: b.outstanding
                    for b in self._federation.backends_at(model, site.name)
                    if b.outstanding
                }
                key = (model, site.name)
                state = (waiting, flight)
                recent = last is not None and now - last < QUIET_AFTER
                if not (waiting or flight or recent) and self._reported.get(key) == state:
                    continue  # quiet and already told
                self._reported[key] = state
                idle = None if last is None else max(0.0, now - last)
                body = {"waiting": waiting, "in_flight": flight, "idle_seconds": idle}
                out.append((site.name, model, body))
        return out

    async def report_once(self) -> None:
        for site, model, body in self._reports():
            with contextlib.suppress(ApiError):
                await self._agents[site].report_demand(model, **body)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            try:
                await self.report_once()
            except Exception:  # reporting must go on
                log.exception("on-demand demand report failed")


def _starting(model: str, why: str, expected: float) -> ModelStarting:
    after = max(1, math.ceil(expected))
    return ModelStarting(
        f"The model '{model}' is not ready: {why}. Try again in about {after} seconds.",
        headers={"retry-after": str(after)},
    )
