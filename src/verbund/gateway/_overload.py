"""Load shedding at the edge of the app, and its metrics.

The decision (who is refused when this process cannot keep up, and why) is
:class:`verbund.admission.Overload`; this middleware applies its one check that comes
before the caller is known, and the collector shows its state on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from verbund.admission import Overload

SHED_PREFIXES = ("/v1/", "/v2/")


class OverloadMiddleware:
    """Refuses every new API request while the event loop is far behind (before the
    caller is known); fair shedding by tenant happens at admission."""

    def __init__(self, app: ASGIApp, overload: Overload) -> None:
        self.app = app
        self.overload = overload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SHED_PREFIXES):
            await self.app(scope, receive, send)
            return
        refusal = self.overload.refusal()
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(refusal.body())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in refusal.headers.items()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
