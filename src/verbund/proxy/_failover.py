"""The failover loop: the one place that decides whether a request tries another backend.

A try fails over to the next backend of the plan when it raises :class:`Retry` (a
refused or broken connection, a timeout before the first byte, HTTP 429/502/503/504),
inside one overall deadline, at most ``max_attempts`` tries, and only while the retry
budget allows, so mass failure does not multiply load. Backends marked down or ejected by
another request while this one was failing over are skipped (those that were already out
when the plan was made are there on purpose: panic routing). Every try holds an
:class:`~verbund.federation.InFlight` claim on its backend for exactly as long as it
runs; a streamed answer hands its claim on to the relay.

Used for inference (the proxy), for resuming a broken stream on another backend (the
relay) and for model metadata (OIP): the same rules everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from verbund.accounting import UsageRecord
from verbund.config import RoutingConfig
from verbund.errors import ApiError, ClientClosed, NoBackendAvailable
from verbund.federation import Backend, InFlight
from verbund.proxy._forward import Retry, fill_record
from verbund.routing import RetryBudget
from verbund.telemetry._tracing import Tracer, span

__all__ = ["Attempt", "Failover"]

log = logging.getLogger("verbund.proxy")

T = TypeVar("T")
# one try at one backend: (backend, its in-flight claim, seconds left) -> result
Attempt = Callable[[Backend, InFlight, float], Awaitable[T]]


class Failover:
    def __init__(self, routing: RoutingConfig, budget: RetryBudget, tracer: Tracer) -> None:
        self._cfg = routing
        self.budget = budget
        self._tracer = tracer

    def begin(self) -> tuple[float, float]:
        """(start, deadline) of a new request; counts it for the retry budget."""
        start = time.monotonic()
        self.budget.on_request(start)
        return start, start + self._cfg.request_deadline

    async def run(
        self,
        candidates: Iterable[Backend],
        attempt: Attempt[T],
        *,
        start: float,
        record: UsageRecord | None = None,
        deadline: float,
        retrying: bool = False,
        stream: bool = False,
    ) -> T:
        """The first try that succeeds, or the last failure (:class:`NoBackendAvailable`
        if nothing was tried). ``retrying``: every try spends retry budget, the first one
        too (resuming a stream is a retry). ``record``: the request's usage record, which
        learns the number of tries and a client's leaving."""
        last_error: ApiError | None = None
        tries = 0
        base = record.attempts if retrying and record is not None else 0
        request_id = record.request_id if record is not None else "-"
        for backend in candidates:
            if tries >= self._cfg.max_attempts:
                break
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            if now < backend.busy_until or (
                not backend.available(now) and backend.out_since >= start
            ):
                continue  # marked down by another request while this one was failing over
            if (tries or retrying) and not self.budget.try_spend(now):
                log.warning("request %s: retry budget spent, no failover", request_id)
                break
            tries += 1
            if record is not None:
                record.attempts = base + tries
            with backend.claim(now) as claim:
                try:
                    with span(
                        self._tracer,
                        "verbund.upstream",
                        {
                            "verbund.site": backend.site.name,
                            "verbund.backend": backend.name,
                            "verbund.try": tries,
                            "verbund.stream": stream,
                        },
                    ):
                        return await attempt(backend, claim, remaining)
                except ClientClosed:
                    if record is not None:
                        fill_record(record, backend, start, status="cancelled", http_status=499)
                    raise
                except Retry as retry:
                    last_error = retry.error
                    log.info(
                        "request %s: %s failed (%s), trying next",
                        request_id,
                        backend.name,
                        retry.error.code,
                    )
        raise last_error or NoBackendAvailable("No backend could take the request.")
