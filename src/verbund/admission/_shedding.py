"""Load shedding: when this process cannot keep up, new API requests get 503 at once.

Queueing work a process cannot do makes every request slow and, past a point, the process
slower still: buffers pile up, timers fire late, and answers are computed for clients
that gave up long ago. An access point does better to say "not me, not now" quickly: 503
``overloaded`` with ``Retry-After: 1`` in OpenAI's error shape, which the OpenAI SDKs retry
and load balancers understand. A refusal costs a tenth of a proxied request, so a
shedding process keeps serving what it admitted at full speed.

Two signals, both per process:

- requests in flight (answers being computed and streams still open) above
  ``gateway.max_in_flight``;
- event-loop lag above ``gateway.shed_after_lag``: a timer that should fire every
  ``TICK`` seconds is late by that much, so the loop is behind on everything.

Shedding is fair: a request is counted only once its key is known (:meth:`Overload.claim`,
from admission), per institution, and when a signal fires the institutions holding more
than an equal share of what is in flight are shed first; the others are still admitted
up to ``HARD_FACTOR`` times the bound. So one tenant's flood of slow requests sheds that
tenant, not everybody. Before authentication only a severe lag (``SEVERE_LAG`` times the
threshold) sheds: the loop is then too far behind to serve anyone well.

Only ``/v1/`` and ``/v2/`` are shed; health, readiness, metrics, status and admin routes
always answer, so operators can see what is going on. Every refusal is logged (at most
once a second, with the count since), saying which signal and which share applied.
"""

from __future__ import annotations

import asyncio
import logging
import time

from verbund.errors import Overloaded

__all__ = ["HARD_FACTOR", "SEVERE_LAG", "TICK", "Claim", "Overload"]

log = logging.getLogger("verbund.overload")

TICK = 0.05
HARD_FACTOR = 1.25  # past this many times the bound, everybody is shed
SEVERE_LAG = 4.0  # past this many times the lag threshold, shed before authentication
LOG_EVERY = 1.0


class Claim:
    """One admitted request's place in the process's count; released exactly once."""

    __slots__ = ("_held", "_overload", "tenant")

    def __init__(self, overload: Overload, tenant: str) -> None:
        self._overload = overload
        self.tenant = tenant
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._overload.release(self.tenant)


class Overload:
    """What the shedding decision reads: requests in flight per tenant, the loop's lag."""

    def __init__(self, max_in_flight: int, max_lag: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_lag = max_lag
        self.in_flight = 0
        self.by_tenant: dict[str, int] = {}
        self.lag = 0.0  # seconds the last tick was late
        self.shed_total = 0
        self._logged_at = -LOG_EVERY
        self._unlogged = 0

    def refusal(self) -> Overloaded | None:
        """Before authentication: only when the loop is far behind."""
        if self.max_lag and self.lag > SEVERE_LAG * self.max_lag:
            return self._shed(
                f"event loop {self.lag * 1000:.0f} ms late",
                "This access point is overloaded; retry shortly.",
            )
        return None

    def claim(self, tenant: str) -> Claim:
        """Count a request of ``tenant`` in flight, or raise :class:`Overloaded`."""
        full = bool(self.max_in_flight) and self.in_flight >= self.max_in_flight
        slow = bool(self.max_lag) and self.lag > self.max_lag
        if full or slow:
            mine = self.by_tenant.get(tenant, 0)
            share = self.in_flight / max(1, len(self.by_tenant))
            hard = bool(self.max_in_flight) and (self.in_flight >= HARD_FACTOR * self.max_in_flight)
            if hard or mine >= share:
                why = (
                    f"{self.in_flight} requests in flight (bound {self.max_in_flight})"
                    if full
                    else f"event loop {self.lag * 1000:.0f} ms late"
                )
                raise self._shed(
                    f"{why}; {tenant} holds {mine}, an equal share is {share:.0f}",
                    f"This access point has {self.in_flight} requests in flight, its limit; "
                    "retry shortly."
                    if full
                    else "This access point is overloaded; retry shortly.",
                )
        self.in_flight += 1
        self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1
        return Claim(self, tenant)

    def release(self, tenant: str) -> None:
        self.in_flight -= 1
        left = self.by_tenant.get(tenant, 0) - 1
        if left > 0:
            self.by_tenant[tenant] = left
        else:
            self.by_tenant.pop(tenant, None)

    def _shed(self, why: str, message: str) -> Overloaded:
        self.shed_total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            log.warning("shedding load: %s (%d refused since the last line)", why, self._unlogged)
            self._logged_at, self._unlogged = now, 0
        return Overloaded(message, headers={"retry-after": "1"})

    async def watch(self) -> None:
        """Measure the event loop's lag, forever (a background task)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.lag = max(0.0, loop.time() - before - TICK)
