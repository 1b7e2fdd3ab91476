"""Backend health: passive failure tracking (ejection) and active probes.

Only failures of the backend count: connection errors, timeouts and 5xx. Errors caused
by the request (4xx) never eject a backend. A refused connection marks the backend down
at once (nothing listens there); other failures eject it after
``eject_after_failures`` in a row, for a time that doubles with each ejection. An ejected
or down backend returns only after a probe succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum

import httpx

from verbund.config import RoutingConfig
from verbund.federation._backend import Backend
from verbund.federation._federation import Federation
from verbund.federation._upstream import UpstreamPool

log = logging.getLogger("verbund.health")

PROBE_PATHS = {"openai": "/v1/models", "oip": "/v2/health/ready"}
# confirming probes only ask "is the process answering at all?": any HTTP status will do
# (llama.cpp has no /health and answers 404 at once even while /v1/models waits for the
# model lock; a stopped or cut-off server answers nothing)
LIVENESS_PATHS = {"openai": "/health", "oip": "/v2/health/live"}
CONFIRM_INTERVAL = 1.0


class Probe(Enum):
    ok = "ok"
    refused = "refused"  # nothing listens: down at once
    failed = "failed"  # timeout or error status: down after PROBE_FAILURES in a row


PROBE_FAILURES = 2
BUSY_GRACE_SECONDS = 30.0  # a backend with requests in flight that answered this recently


class Failure(Enum):
    refused = "refused"
    timeout = "timeout"
    server_error = "server_error"


class HealthTracker:
    """Bookkeeping of backend health; time is passed in so tests control it.

    Ejection is capped: at most ``max_ejection_percent`` of the backends of any model are
    ejected at once (the cap never blocks marking a refused backend down: nothing listens
    there). A backend that returns from ejection or from being down ramps up over
    ``slow_start_seconds`` (see the router's score).
    """

    def __init__(self, routing: RoutingConfig, federation: Federation | None = None) -> None:
        self._cfg = routing
        self._federation = federation

    def on_success(self, backend: Backend, now: float | None = None) -> None:
        backend.consecutive_failures = 0
        backend.last_success = time.monotonic() if now is None else now

    def on_failure(self, backend: Backend, failure: Failure, now: float) -> None:
        backend.failures += 1
        backend.consecutive_failures += 1
        backend.last_error = failure.value
        if failure is Failure.refused:
            if backend.healthy:
                log.warning("backend %s down: connection refused", backend.name)
                backend.down_since = now
            backend.healthy = False
            return
        if backend.consecutive_failures >= self._cfg.eject_after_failures and now >= (
            backend.ejected_until
        ):
            self.eject(backend, now)

    def may_eject(self, backend: Backend, now: float) -> bool:
        if self._federation is None:
            return True
        limit = self._cfg.max_ejection_percent / 100
        for model in backend.config.models:
            peers = self._federation.backends_for(model)
            ejected = sum(1 for b in peers if b is not backend and now < b.ejected_until)
            if (ejected + 1) / len(peers) > limit and len(peers) > 1:
                return False
        return True

    def eject(self, backend: Backend, now: float) -> bool:
        if not self.may_eject(backend, now):
            log.warning(
                "backend %s failing but not ejected: max_ejection_percent reached", backend.name
            )
            return False
        seconds = min(
            self._cfg.eject_base_seconds * (2 ** min(backend.ejections, 16)),
            self._cfg.eject_max_seconds,
        )
        backend.ejected_until = now + seconds
        backend.returned_at = backend.ejected_until
        backend.ejections += 1
        backend.ejected_total += 1
        backend.consecutive_failures = 0
        log.warning("backend %s ejected for %.1fs", backend.name, seconds)
        return True

    def on_probe(
        self,
        backend: Backend,
        result: Probe,
        now: float,
        *,
        confirming: bool = False,
        sent_at: float | None = None,
    ) -> None:
        """A probe that times out is weak evidence: a single-threaded server busy with
        requests (llama.cpp) answers probes late. It takes two in a row, and none while
        the backend is answering real requests, to mark a backend down — unless the probe
        was sent to confirm a request's failure (``confirming``): two failures at once are
        enough."""
        if result is Probe.ok:
            if sent_at is not None and sent_at < backend.down_since:
                return  # it answered before it went down: old news
            backend.last_probe_ok = now
            backend.probe_failures = 0
            if not backend.healthy:
                log.info("backend %s healthy again", backend.name)
                backend.returned_at = max(now, backend.ejected_until)
            backend.healthy = True
            calm_since = backend.ejected_until + self._cfg.eject_max_seconds
            if backend.ejections and now >= calm_since and backend.consecutive_failures == 0:
                # long enough without trouble: forget one step of the back-off
                backend.ejections -= 1
                backend.ejected_until = now  # the next step needs another calm period
            return
        backend.probe_failures += 1
        since_success = now - backend.last_success
        busy_but_answering = since_success < 3 * self._cfg.probe_interval or (
            backend.outstanding > 0 and since_success < BUSY_GRACE_SECONDS
        )
        if (
            result is Probe.refused
            or confirming
            or (backend.probe_failures >= PROBE_FAILURES and not busy_but_answering)
        ):
            if backend.healthy:
                log.warning("backend %s failed its health probe (%s)", backend.name, result.value)
                backend.down_since = now
            backend.healthy = False


class Prober:
    """Background task: probes every backend each ``probe_interval`` seconds."""

    def __init__(
        self,
        federation: Federation,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        on_round: Callable[[dict[str, bool]], None] | None = None,
    ) -> None:
        self._federation = federation
        self._pool = pool
        self._tracker = tracker
        self._cfg = routing
        self._on_round = on_round  # site -> any backend answered (availability accounting)
        self.rounds = 0
        self.round_done = asyncio.Event()
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self._confirmed_at: dict[str, float] = {}

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
        try:
            await self._pool.client(backend).get(
                LIVENESS_PATHS[backend.kind], timeout=min(self._cfg.probe_timeout, 1.0)
            )
        except httpx.ConnectError:
            result = Probe.refused
        except httpx.HTTPError:
            result = Probe.failed
        else:
            return  # it answered: alive, whatever the status
        self._tracker.on_probe(backend, result, time.monotonic(), confirming=True)

    async def probe(self, backend: Backend, within: float | None = None) -> Probe:
        path = PROBE_PATHS[backend.kind]
        try:
            resp = await self._pool.client(backend).get(
                path, timeout=within or self._cfg.probe_timeout
            )
        except httpx.ConnectError:
            return Probe.refused
        except httpx.HTTPError:
            return Probe.failed
        return Probe.ok if resp.status_code == 200 else Probe.failed

    async def probe_all(self) -> None:
        backends = [
            b for b in self._federation.backends.values() if b.site.state.value != "maintenance"
        ]
        sent_at = time.monotonic()
        results = await asyncio.gather(*(self.probe(b) for b in backends))
        now = time.monotonic()
        for b, result in zip(backends, results, strict=True):
            self._tracker.on_probe(b, result, now, sent_at=sent_at)
        if self._on_round is not None:
            sites: dict[str, bool] = {}
            for b, result in zip(backends, results, strict=True):
                sites[b.site.name] = sites.get(b.site.name, False) or result is Probe.ok
            self._on_round(sites)
        self.rounds += 1
        self.round_done.set()
        self.round_done = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._cfg.probe_interval)
