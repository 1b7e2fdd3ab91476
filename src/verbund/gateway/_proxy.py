"""The proxy: sends one request along a route plan, with failover, and streams the answer.

A try fails over to the next backend of the plan on a refused or broken connection, a
timeout before the first byte, or HTTP 429/502/503/504, inside one overall deadline,
at most ``max_attempts`` tries, and only while the retry budget allows (so mass failure
does not multiply load). Each try's deadline is derived from the backend's observed
latency (:func:`verbund.routing.try_deadline`), so a stalled backend costs about a
second, not a minute. A 429 with ``Retry-After`` keeps new requests away from that
backend for that long without counting as a failure. After the first byte has gone to
the client there is no plain retry: see :mod:`verbund.gateway._stream`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import orjson
from starlette.responses import Response

from verbund.accounting import UsageRecord
from verbund.config import RoutingConfig
from verbund.errors import (
    ApiError,
    BadRequest,
    ClientClosed,
    NoBackendAvailable,
    UpstreamError,
    UpstreamTimeout,
)
from verbund.federation import (
    Backend,
    Failure,
    HealthTracker,
    Upstream,
    UpstreamFailed,
    UpstreamPool,
    UpstreamRefused,
    UpstreamTimedOut,
)
from verbund.gateway._forward import (
    Answer,
    ClientGone,
    Forward,
    Retry,
    client_headers,
    sanitize_upstream_message,
)
from verbund.gateway._sse import Usage
from verbund.gateway._stream import Hung, StreamRelay
from verbund.routing import RetryBudget, try_deadline
from verbund.telemetry._tracing import NoOpTracer, Tracer, span

log = logging.getLogger("verbund.proxy")

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
WATCH_STEP = 0.25  # how often a waiting request looks whether its backend has hung


class Proxy:
    def __init__(
        self,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        on_usage: Callable[[UsageRecord], None],
        budget: RetryBudget | None = None,
        tracer: Tracer | None = None,
        on_suspect: Callable[[Backend, bool], None] | None = None,
    ) -> None:
        self._pool = pool
        self._tracker = tracker
        self._cfg = routing
        self._on_usage = on_usage
        self._tracer = tracer or NoOpTracer()
        self._on_suspect = on_suspect
        self.budget = budget or RetryBudget(
            routing.retry_budget_ratio, routing.retry_budget_min_per_second
        )

    @property
    def config(self) -> RoutingConfig:
        return self._cfg

    def upstream(self, backend: Backend) -> Upstream:
        return self._pool.upstream(backend)

    async def forward(self, fwd: Forward) -> Response:
        """Answer a client: a streaming response, or the backend's JSON body as it came."""
        if fwd.stream:
            return await self._run(fwd, StreamRelay(self).open)
        answer = await self._run(fwd, self._try_once)
        return Response(
            answer.body,
            status_code=200,
            media_type="application/json",
            headers=client_headers(answer.backend, fwd),
        )

    async def call(self, fwd: Forward) -> Answer:
        """A non-streamed request for callers inside the access point (batch workers)."""
        return await self._run(fwd, self._try_once)

    async def _run(
        self,
        fwd: Forward,
        attempt: Callable[[Backend, Forward, float, float], Awaitable[T]],
    ) -> T:
        start = time.monotonic()
        deadline = start + self._cfg.request_deadline
        self.budget.on_request(start)
        last_error: ApiError | None = None
        tries = 0
        for backend in fwd.plan[: self._cfg.max_attempts]:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            if not backend.available(now):
                continue  # marked down by another request while this one was failing over
            if tries and not self.budget.try_spend(now):
                log.warning("request %s: retry budget spent, no failover", fwd.record.request_id)
                break
            tries += 1
            fwd.record.attempts = tries
            if backend.outstanding == 0:
                backend.busy_since = now
            backend.outstanding += 1
            try:
                with span(
                    self._tracer,
                    "verbund.upstream",
                    {
                        "verbund.site": backend.site.name,
                        "verbund.backend": backend.name,
                        "verbund.try": tries,
                        "verbund.stream": fwd.stream,
                    },
                ):
                    result = await attempt(backend, fwd, start, remaining)
            except ClientClosed:
                backend.outstanding -= 1
                self.finish(fwd.record, backend, start, status="cancelled", http_status=499)
                raise
            except Retry as retry:
                backend.outstanding -= 1
                last_error = retry.error
                log.info(
                    "request %s: %s failed (%s), trying next",
                    fwd.record.request_id,
                    backend.name,
                    retry.error.code,
                )
                continue
            except BaseException:
                backend.outstanding -= 1
                raise
            return result
        error = last_error or NoBackendAvailable("No backend could take the request.")
        self.finish(fwd.record, None, start, status="error", http_status=error.status)
        raise error

    async def watched(
        self,
        backend: Backend,
        work: Awaitable[T],
        budget: float,
        client_gone: ClientGone | None = None,
    ) -> T:
        """Await ``work`` (no byte has reached the client yet) within ``budget`` seconds,
        giving up early when the backend turns out to be hung: requests in flight there and
        no bytes back (``Backend.stalled``) trigger a confirming liveness probe, and once
        that has marked the backend down the request goes elsewhere at once (:class:`Hung`).

        ``work`` runs in the calling task; one timer looks every ``WATCH_STEP`` seconds and
        cancels the task on a verdict (a task and ``asyncio.wait`` per request cost more
        than everything else the proxy does).

        A request still waiting after the first look also watches its client
        (``client_gone``): if the client disconnects, the upstream call is cancelled
        (:class:`ClientClosed`), which closes the connection to the backend, and engines
        stop generating for requests whose connection closed. Quick answers never start
        that watcher."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.time() + budget
        verdict: type[Exception] | None = None
        handle: asyncio.TimerHandle
        watcher: asyncio.Task[None] | None = None

        def gone(t: asyncio.Task[None]) -> None:
            nonlocal verdict
            if t.cancelled() or t.exception() is not None or verdict is not None:
                return
            verdict = ClientClosed
            task.cancel()

        def look() -> None:
            nonlocal handle, verdict, watcher
            if verdict is not None:
                return
            now = loop.time()
            if now >= deadline:
                verdict = TimeoutError
            elif not backend.healthy:
                verdict = Hung
            if verdict is not None:
                task.cancel()
                return
            if self._on_suspect is not None and backend.stalled(
                time.monotonic(), self._cfg.stall_seconds
            ):
                self._on_suspect(backend, False)
            if client_gone is not None and watcher is None:
                watcher = loop.create_task(client_gone())
                watcher.add_done_callback(gone)
            handle = loop.call_at(min(now + WATCH_STEP, deadline), look)

        handle = loop.call_at(min(loop.time() + WATCH_STEP, deadline), look)
        try:
            result = await work
        except asyncio.CancelledError:
            # our own cancel becomes the verdict; anyone else's stays a cancellation
            if verdict is not None and task.uncancel() == 0:
                if verdict is ClientClosed:
                    raise ClientClosed("The client closed the connection.") from None
                raise verdict from None
            raise
        finally:
            handle.cancel()
            if watcher is not None:
                watcher.cancel()
        if verdict is not None:
            task.uncancel()  # the work swallowed our cancel and finished anyway
        return result

    def try_timeout(self, backend: Backend, fwd: Forward, remaining: float) -> float:
        derived = try_deadline(backend, fwd.ctx, self._cfg, time.monotonic(), stream=fwd.stream)
        return max(0.001, min(derived, remaining))

    def headers(self, fwd: Forward) -> dict[str, str]:
        return {"content-type": "application/json", "x-request-id": fwd.record.request_id}

    def fail(self, backend: Backend, failure: Failure) -> None:
        self._tracker.on_failure(backend, failure, time.monotonic())
        if failure is not Failure.refused and self._on_suspect is not None and backend.healthy:
            self._on_suspect(backend, True)

    def succeed(self, backend: Backend) -> None:
        backend.last_progress = time.monotonic()
        self._tracker.on_success(backend, backend.last_progress)

    async def _try_once(
        self, backend: Backend, fwd: Forward, start: float, remaining: float
    ) -> Answer:
        budget = self.try_timeout(backend, fwd, remaining)
        try:
            status, headers, body = await self.watched(
                backend, self._exchange(backend, fwd, budget), budget, fwd.client_gone
            )
        except Hung:
            raise Retry(UpstreamTimeout("The model server stopped answering.")) from None
        except (UpstreamFailed, TimeoutError) as exc:
            raise self.transport_failure(backend, exc) from None
        try:
            self.check_status(backend, status, body, headers)
        except ApiError as exc:
            self.finish(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        backend.outstanding -= 1
        self.succeed(backend)
        try:
            usage = Usage.from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            usage = None
        elapsed = time.monotonic() - start
        if usage is not None and usage.completion_tokens > 0:
            backend.latency.observe_tpot(elapsed / (usage.completion_tokens + 1))
        self.finish(
            fwd.record, backend, start, status="ok", http_status=200, usage=usage, ttft=elapsed
        )
        return Answer(body, backend)

    async def _exchange(
        self, backend: Backend, fwd: Forward, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        resp = await self._pool.upstream(backend).post(
            fwd.path, fwd.body, self.headers(fwd), read_timeout=budget
        )
        try:
            return resp.status, resp.headers, await resp.read()
        finally:
            await resp.aclose()

    def transport_failure(self, backend: Backend, exc: Exception) -> Retry:
        """Map a failure below HTTP (:class:`UpstreamFailed`, or our own deadline's
        ``TimeoutError``) to a retry, and tell the health tracker."""
        if isinstance(exc, UpstreamRefused):
            self.fail(backend, Failure.refused)
            return Retry(NoBackendAvailable("The model server could not be reached."))
        if isinstance(exc, UpstreamTimedOut | TimeoutError):
            if backend.outstanding > self._pool.limit(backend):
                # it waited for one of this access point's connections, all busy: that is
                # load from our side, not a sign that the backend is failing
                return Retry(NoBackendAvailable("Every model server for this model is busy."))
            self.fail(backend, Failure.timeout)
            return Retry(UpstreamTimeout("The model server did not answer in time."))
        self.fail(backend, Failure.server_error)
        return Retry(UpstreamError("The connection to the model server failed."))

    def check_status(
        self, backend: Backend, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Raise :class:`Retry` for statuses worth another backend, ApiError for the rest."""
        if status == 200:
            return
        if status == 429:
            retry_after = _retry_after(headers)
            backend.busy_until = time.monotonic() + retry_after
            raise Retry(
                NoBackendAvailable(
                    "Every model server for this model is busy.",
                    headers={"retry-after": str(max(1, round(retry_after)))},
                )
            )
        if status in RETRYABLE_STATUS:
            self.fail(backend, Failure.server_error)
            raise Retry(UpstreamError(f"The model server failed (HTTP {status})."))
        if 400 <= status < 500:
            detail = sanitize_upstream_message(body)
            err = BadRequest(
                "The model server rejected the request" + (f": {detail}" if detail else "."),
                code="upstream_rejected",
            )
            err.status = status if status in (400, 404, 413, 422) else 400
            raise err
        self.fail(backend, Failure.server_error)
        raise UpstreamError(f"The model server failed (HTTP {status}).")

    def finish(
        self,
        rec: UsageRecord,
        backend: Backend | None,
        start: float,
        *,
        status: str,
        http_status: int,
        usage: Usage | None = None,
        ttft: float | None = None,
    ) -> None:
        rec.latency_ms = round((time.monotonic() - start) * 1000, 3)
        rec.status = status
        rec.http_status = http_status
        if backend is not None:
            rec.site = backend.site.name
            rec.backend = backend.name
            if status == "ok":
                backend.served += 1
            if ttft is not None:
                rec.ttft_ms = round(ttft * 1000, 3)
        if usage is not None:
            rec.prompt_tokens = usage.prompt_tokens
            rec.completion_tokens = usage.completion_tokens
        self._on_usage(rec)


def _retry_after(headers: Mapping[str, str] | None) -> float:
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(raw))) if raw else 1.0
    except ValueError:
        return 1.0
