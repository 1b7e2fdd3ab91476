"""Active health probes: spread over the interval, one shared client, bounded in rate.

Probing every backend at once each round (``asyncio.gather``) held the event loop for
about 0.8 ms per backend at a time, so with hundreds of backends requests waited behind a
probe round. Instead each backend has its own due time, first drawn at random within the
interval and then repeated with ±10 % jitter, so probes trickle out evenly.

The probe rate is bounded (``routing.max_probe_rate`` per second): with more backends
than the rate allows within ``probe_interval``, healthy backends are probed less often.
Backends that are down, ejected or awaiting a verdict are always probed every
``probe_interval`` (they are how a federation recovers), and a healthy backend that
answered a real request within the interval is not probed at all: the request said more
than a probe would. Failures of requests still reach the health tracker at once and are
confirmed by an immediate probe (:meth:`Prober.suspect`), so detection does not wait
for the schedule.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable

from verbund.config import RoutingConfig
from verbund.federation._backend import Backend
from verbund.federation._federation import Federation
from verbund.federation._health import HealthTracker, Probe
from verbund.federation._upstream import UpstreamFailed, UpstreamPool, UpstreamRefused

__all__ = ["CONFIRM_INTERVAL", "LIVENESS_PATHS", "PROBE_PATHS", "Prober"]

PROBE_PATHS = {"openai": "/v1/models", "oip": "/v2/health/ready"}
# confirming probes only ask "is the process answering at all?": any HTTP status will do
# (llama.cpp answers /health at once even while /v1/models waits for the model lock; a
# stopped or cut-off server answers nothing)
LIVENESS_PATHS = {"openai": "/health", "oip": "/v2/health/live"}
CONFIRM_INTERVAL = 1.0
JITTER = 0.1


class Prober:
    """Background task (:meth:`run`): probes backends on a spread-out schedule."""

    def __init__(
        self,
        federation: Federation,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        on_round: Callable[[dict[str, bool]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._federation = federation
        self._pool = pool
        self._tracker = tracker
        self._cfg = routing
        self._on_round = on_round  # site -> any backend answered (availability accounting)
        self._rng = rng or random.Random()
        self.rounds = 0
        self.probes_sent = 0
        self.round_done = asyncio.Event()
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self._confirmed_at: dict[str, float] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._up: dict[str, bool] = {}  # backend -> its last probe (or request) said up
        self._sent: dict[str, float] = {}  # backend -> when its last scheduled probe left

    # -- confirming a request's failure ---------------------------------------------------

    def suspect(self, backend: Backend, failed: bool = True) -> None:
        """A request just failed there (reset, timeout): probe it now, not at the next round.

        If the probe fails too the backend is marked down at once; a keep-alive race or a
        single slow answer passes the probe and changes nothing. One probe per backend at
        a time.
        """
        running = self._confirming.get(backend.name)
        if running is not None and not running.done():
            return
        now = time.monotonic()
        # a request that just failed there is always worth a probe; a mere stall (no bytes
        # back for a while) at most once a second
        if not failed and now - self._confirmed_at.get(backend.name, -1e9) < CONFIRM_INTERVAL:
            return
        self._confirmed_at[backend.name] = now
        self._confirming[backend.name] = asyncio.get_running_loop().create_task(
            self._confirm(backend)
        )

    async def _confirm(self, backend: Backend) -> None:
        sent_at = time.monotonic()
        if self._tracker.awaiting_confirmation(backend):
            # enough 5xx answers to eject: the full health probe decides
            result = await self.probe(backend, min(self._cfg.probe_timeout, 1.0))
            self._tracker.on_probe(backend, result, time.monotonic(), sent_at=sent_at)
            return
        try:
            await self._pool.side.get(
                backend, LIVENESS_PATHS[backend.kind], within=min(self._cfg.probe_timeout, 1.0)
            )
        except UpstreamRefused:
            result = Probe.refused
        except UpstreamFailed:
            result = Probe.failed
        else:
            # it answered: alive, whatever the status; but if enough 5xx answers came in
            # meanwhile to eject it, the full health probe decides that now
            if self._tracker.awaiting_confirmation(backend):
                sent_at = time.monotonic()
                result = await self.probe(backend, min(self._cfg.probe_timeout, 1.0))
                self._tracker.on_probe(backend, result, time.monotonic(), sent_at=sent_at)
            return
        self._tracker.on_probe(backend, result, time.monotonic(), confirming=True)

    # -- probes -----------------------------------------------------------------------------

    async def probe(self, backend: Backend, within: float | None = None) -> Probe:
        self.probes_sent += 1
        try:
            status, _ = await self._pool.side.get(
                backend, PROBE_PATHS[backend.kind], within=within or self._cfg.probe_timeout
            )
        except UpstreamRefused:
            return Probe.refused
        except UpstreamFailed:
            return Probe.failed
        return Probe.ok if status == 200 else Probe.failed

    @staticmethod
    def _scheduled(b: Backend) -> bool:
        """Whether ``b`` is probed on the schedule. A backend announced by its site's agent
        is the agent's to probe; this access point probes it only to bring back what its
        own confirmation of failed requests took out."""
        if b.site.state.value == "maintenance":
            return False
        if b.announced:
            return not b.healthy and not b.site_down
        return True

    def _probed(self) -> list[Backend]:
        return [b for b in self._federation.backends.values() if self._scheduled(b)]

    async def probe_all(self) -> None:
        """Probe every backend at once: one round (tests, tools). :meth:`run` spreads them."""
        backends = self._probed()
        sent_at = time.monotonic()
        results = await asyncio.gather(*(self.probe(b) for b in backends))
        now = time.monotonic()
        for b, result in zip(backends, results, strict=True):
            self._tracker.on_probe(b, result, now, sent_at=sent_at)
            self._up[b.name] = result is Probe.ok
        self._report(backends)

    def interval(self, backend: Backend, probed: int, now: float) -> float:
        """Seconds until ``backend``'s next probe (before jitter)."""
        base = self._cfg.probe_interval
        if not backend.available(now) or self._tracker.awaiting_confirmation(backend):
            return base
        if self._cfg.max_probe_rate > 0:
            return max(base, probed / self._cfg.max_probe_rate)
        return base

    async def _probe_one(self, backend: Backend) -> None:
        sent_at = self._sent[backend.name] = time.monotonic()
        result = await self.probe(backend)
        self._tracker.on_probe(backend, result, time.monotonic(), sent_at=sent_at)
        self._up[backend.name] = result is Probe.ok

    def _due(self, backend: Backend, now: float) -> None:
        """Probe ``backend`` now unless a request just vouched for it or one is running."""
        running = self._probing.get(backend.name)
        if running is not None and not running.done():
            return
        recently = now - backend.last_success < self._cfg.probe_interval
        if recently and backend.available(now) and not self._tracker.awaiting_confirmation(backend):
            self._up[backend.name] = True
            return
        self._probing[backend.name] = asyncio.get_running_loop().create_task(
            self._probe_one(backend)
        )

    def _report(self, backends: list[Backend]) -> None:
        if self._on_round is not None:
            sites: dict[str, bool] = {}
            for b in backends:
                if b.name in self._up:
                    sites[b.site.name] = sites.get(b.site.name, False) or self._up[b.name]
            self._on_round(sites)
        self.rounds += 1
        self.round_done.set()
        self.round_done = asyncio.Event()

    async def run(self) -> None:
        """Forever: each backend probed when due; every ``probe_interval`` one availability
        round is reported (each site's backends as their last probe left them)."""
        backends = list(self._federation.backends.values())
        now = time.monotonic()
        first = self._cfg.probe_interval
        if self._cfg.max_probe_rate > 0:
            first = max(first, len(backends) / self._cfg.max_probe_rate)
        queue = [(now + self._rng.uniform(0, first), i, b) for i, b in enumerate(backends)]
        heapq.heapify(queue)
        scheduled = {id(b) for b in backends}
        seq = len(backends)  # heap entries' tie-breaker, never repeated
        version = self._federation.version
        next_round = now + self._cfg.probe_interval
        count = len(self._probed())
        try:
            while True:
                now = time.monotonic()
                if version != self._federation.version:  # backends joined (a site's agent)
                    version = self._federation.version
                    for b in self._federation.backends.values():
                        if id(b) not in scheduled:
                            scheduled.add(id(b))
                            due = now + self._rng.uniform(0, self._cfg.probe_interval)
                            seq += 1
                            heapq.heappush(queue, (due, seq, b))
                if now >= next_round:
                    probed = self._probed()
                    count = len(probed)
                    self._report(probed)
                    next_round = now + self._cfg.probe_interval
                    for b in probed:
                        # out of rotation since its last (stretched) probe: do not wait
                        if not b.available(now) and (
                            now - self._sent.get(b.name, -1e9) >= self._cfg.probe_interval
                        ):
                            self._due(b, now)
                if queue and queue[0][0] <= now:
                    _, i, b = heapq.heappop(queue)
                    if self._federation.backends.get(b.name) is not b:  # it left
                        scheduled.discard(id(b))
                        self._up.pop(b.name, None)
                        continue
                    if self._scheduled(b):
                        self._due(b, now)
                    else:
                        self._up.pop(b.name, None)
                    step = self.interval(b, count, now)
                    jitter = self._rng.uniform(1 - JITTER, 1 + JITTER)
                    heapq.heappush(queue, (now + step * jitter, i, b))
                    continue
                wake = min(next_round, queue[0][0]) if queue else next_round
                await asyncio.sleep(max(0.0, wake - now))
        finally:
            for task in [*self._probing.values(), *self._confirming.values()]:
                task.cancel()
