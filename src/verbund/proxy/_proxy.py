"""The proxy: sends one request along a route plan and gives back the answer.

Three steps, one module each: :mod:`._failover` decides which backend is tried next,
:mod:`._attempt` makes one try and judges it, :mod:`._relay` passes a streamed answer on
(and resumes it elsewhere when it breaks). This class only puts them together for the
three things callers need: answer a client (:meth:`forward`), answer a caller inside the
access point (:meth:`call`, batch workers) and read model metadata (:meth:`fetch`).

The proxy never emits usage records: it writes what happened into the request's record,
and the request's :class:`~verbund.accounting.Recording` emits it once.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from verbund.config import RoutingConfig
from verbund.federation import RECEIPT_HEADER, Backend, HealthTracker, InFlight, UpstreamPool
from verbund.proxy._attempt import Attempts
from verbund.proxy._failover import Failover
from verbund.proxy._forward import Answer, Forward, client_headers
from verbund.proxy._relay import StreamRelay
from verbund.proxy._watch import Watch
from verbund.routing import RetryBudget
from verbund.telemetry._tracing import NoOpTracer, Tracer

__all__ = ["Proxy"]


class Proxy:
    def __init__(
        self,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        budget: RetryBudget | None = None,
        tracer: Tracer | None = None,
        on_suspect: Callable[[Backend, bool], None] | None = None,
        stream_write_timeout: float = 30.0,
    ) -> None:
        self.config = routing
        self.budget = budget or RetryBudget(
            routing.retry_budget_ratio, routing.retry_budget_min_per_second
        )
        self.failover = Failover(routing, self.budget, tracer or NoOpTracer())
        self.attempts = Attempts(pool, tracker, routing, Watch(routing, on_suspect))
        self._relay = StreamRelay(self.attempts, self.failover, stream_write_timeout)

    async def forward(self, fwd: Forward) -> Response:
        """Answer a client: a streaming response, or the backend's JSON body as it came."""
        start, deadline = self.failover.begin()
        if fwd.stream:

            async def open_stream(backend: Backend, claim: InFlight, remaining: float) -> Response:
                return await self._relay.open(backend, claim, remaining, fwd, start, deadline)

            return await self.failover.run(
                fwd.plan,
                open_stream,
                record=fwd.record,
                start=start,
                deadline=deadline,
                stream=True,
            )
        answer = await self._answer(fwd, start, deadline)
        headers = client_headers(answer.backend, fwd)
        receipt = answer.headers.get(RECEIPT_HEADER)
        if receipt and answer.backend.site.config.ingress == "agent":
            # signed by the agent of the site that served it; never from a model server
            headers[RECEIPT_HEADER] = receipt
        return Response(
            answer.body, status_code=200, media_type="application/json", headers=headers
        )

    async def call(self, fwd: Forward) -> Answer:
        """A non-streamed request for callers inside the access point (batch workers)."""
        start, deadline = self.failover.begin()
        return await self._answer(fwd, start, deadline)

    async def _answer(self, fwd: Forward, start: float, deadline: float) -> Answer:
        async def answer(backend: Backend, claim: InFlight, remaining: float) -> Answer:
            return await self.attempts.answer(backend, claim, remaining, fwd, start)

        return await self.failover.run(
            fwd.plan, answer, record=fwd.record, start=start, deadline=deadline
        )

    async def fetch(self, plan: list[Backend], path: str, request_id: str) -> Answer:
        """A GET along the plan (model metadata); no usage is recorded for it."""
        start, deadline = self.failover.begin()

        async def get(backend: Backend, claim: InFlight, remaining: float) -> Answer:
            return await self.attempts.fetch(backend, claim, remaining, path, request_id)

        return await self.failover.run(plan, get, start=start, deadline=deadline)
