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

Only ``/v1/`` and ``/v2/`` are shed; health, readiness, metrics, status and admin routes
always answer, so operators can see what is going on. Shedding is logged at warning level
with its reason and the numbers behind it, at most once per ``LOG_EVERY`` seconds (with
how many requests were shed since the last line), so a shedding process says so without
flooding its log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from verbund.errors import Overloaded

log = logging.getLogger("verbund.overload")

TICK = 0.05
LOG_EVERY = 10.0
SHED_PREFIXES = ("/v1/", "/v2/")


class Overload:
    """What the shedding decision reads: in-flight count and the loop's lag."""

    def __init__(self, max_in_flight: int, max_lag: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_lag = max_lag
        self.in_flight = 0
        self.lag = 0.0  # seconds the last tick was late
        self.shed_total = 0
        self._logged_at = -1e9
        self._logged_total = 0

    def refusal(self) -> Overloaded | None:
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            self._shed(
                "%d requests in flight, gateway.max_in_flight is %d",
                self.in_flight,
                self.max_in_flight,
            )
            return Overloaded(
                f"This access point has {self.in_flight} requests in flight, its limit; "
                "retry shortly.",
                headers={"retry-after": "1"},
            )
        if self.max_lag and self.lag > self.max_lag:
            self._shed(
                "event loop %.3fs late, gateway.shed_after_lag is %gs", self.lag, self.max_lag
            )
            return Overloaded(
                "This access point is overloaded; retry shortly.", headers={"retry-after": "1"}
            )
        return None

    def _shed(self, why: str, *args: object) -> None:
        self.shed_total += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            return
        log.warning(
            "shedding new API requests with 503 overloaded: " + why + " (%d shed since last)",
            *args,
            self.shed_total - self._logged_total,
        )
        self._logged_at, self._logged_total = now, self.shed_total

    async def watch(self) -> None:
        """Measure the event loop's lag, forever (a background task)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.lag = max(0.0, loop.time() - before - TICK)


class OverloadMiddleware:
    """Counts API requests in flight and refuses new ones while :class:`Overload` says so."""

    def __init__(self, app: ASGIApp, overload: Overload) -> None:
        self.app = app
        self.overload = overload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SHED_PREFIXES):
            await self.app(scope, receive, send)
            return
        ov = self.overload
        refusal = ov.refusal()
        if refusal is not None:
            body = orjson.dumps(refusal.body())
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.encode(), v.encode()) for k, v in refusal.headers.items()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        ov.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            ov.in_flight -= 1


class OverloadCollector(Collector):
    """Exposes the shedding state on ``/metrics``, read at scrape time."""

    def __init__(self, overload: Overload) -> None:
        self._ov = overload

    def collect(self) -> Iterator[Metric]:
        ov = self._ov
        yield GaugeMetricFamily(
            "verbund_process_in_flight",
            "API requests and streams in flight in this process.",
            value=ov.in_flight,
        )
        yield GaugeMetricFamily(
            "verbund_event_loop_lag_seconds",
            "How late the last event-loop tick fired.",
            value=ov.lag,
        )
        yield CounterMetricFamily(
            "verbund_shed",
            "API requests refused with 503 because of overload.",
            value=ov.shed_total,
        )
