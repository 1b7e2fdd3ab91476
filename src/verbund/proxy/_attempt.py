"""One try at one backend: send, wait watchfully, judge the answer, tell the health tracker.

Each try's deadline is derived from the backend's observed latency
(:func:`verbund.routing.try_deadline`), so a stalled backend costs about a second, not a
minute. A 429 with ``Retry-After`` keeps new requests away from that backend for that
long without counting as a failure. Failures that another backend may not have become
:class:`Retry` for the failover loop; everything else is an :class:`ApiError` that ends
the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import orjson

from verbund.config import RoutingConfig
from verbund.errors import (
    ApiError,
    BackendLost,
    BackendRefused,
    BadRequest,
    NoBackendAvailable,
    UpstreamError,
    UpstreamTimeout,
)
from verbund.federation import (
    INSTITUTION_HEADER,
    RECEIPT_HEADER,
    Backend,
    Failure,
    HealthTracker,
    InFlight,
    UpstreamBroken,
    UpstreamFailed,
    UpstreamPool,
    UpstreamRefused,
    UpstreamResponse,
    UpstreamTimedOut,
    request_key,
)
from verbund.policy import DATA_CLASS_HEADER
from verbund.proxy._forward import (
    PASSED_HEADERS,
    Answer,
    ClientGone,
    Forward,
    Retry,
    fill_record,
    loggable_upstream_message,
    sanitize_upstream_message,
)
from verbund.proxy._sse import Usage
from verbund.proxy._watch import Hung, Watch
from verbund.routing import try_deadline

__all__ = ["RETRYABLE_STATUS", "Attempts", "Opened"]

log = logging.getLogger("verbund.proxy")
T = TypeVar("T")
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


@dataclass(slots=True)
class Opened:
    """A stream whose first chunk has arrived, and the claim it holds on its backend."""

    backend: Backend
    claim: InFlight
    response: UpstreamResponse
    chunks: AsyncIterator[bytes]
    first: bytes

    async def aclose(self) -> None:
        self.claim.release()
        await self.response.aclose()


class Attempts:
    def __init__(
        self,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        watch: Watch,
    ) -> None:
        self._pool = pool
        self._tracker = tracker
        self.config = routing
        self.watch = watch

    # -- the three kinds of try ---------------------------------------------------------

    async def answer(
        self, backend: Backend, claim: InFlight, remaining: float, fwd: Forward, start: float
    ) -> Answer:
        """A non-streamed POST; fills the usage record on an answer or a final error."""
        budget = self.try_timeout(backend, fwd, remaining)
        upstream = self._pool.upstream(backend)

        async def exchange() -> tuple[int, Mapping[str, str], bytes]:
            resp = await upstream.post(
                fwd.path,
                fwd.body_for(backend),
                self.headers(fwd, backend),
                read_timeout=budget,
            )
            try:
                return resp.status, resp.headers, await resp.read()
            finally:
                await resp.aclose()

        status, headers, body = await self._watched(
            backend, exchange(), budget, fwd.client_gone, fwd.body
        )
        try:
            self.check_status(backend, status, body, headers, fwd.body)
        except ApiError as exc:
            fill_record(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        claim.release()
        self.succeed(backend)
        try:
            usage = Usage.from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            usage = None
        elapsed = time.monotonic() - start
        if usage is not None and usage.completion_tokens > 0:
            backend.latency.observe_tpot(elapsed / (usage.completion_tokens + 1))
        fill_record(
            fwd.record, backend, start, status="ok", http_status=200, usage=usage, ttft=elapsed
        )
        passed = {h: headers[h] for h in PASSED_HEADERS if h in headers}
        return Answer(body, backend, passed)

    async def open(
        self,
        backend: Backend,
        claim: InFlight,
        remaining: float,
        fwd: Forward,
        body: bytes,
        client_gone: ClientGone | None = None,
    ) -> Opened:
        """Open an upstream stream and read its first chunk inside the try's deadline.

        The returned stream holds the claim (handed over from the try). ``client_gone``
        only before the response has started: after that the streaming response itself
        listens for the client's disconnect."""
        budget = self.try_timeout(backend, fwd, remaining)
        began = time.monotonic()
        resp = await self._watched(
            backend,
            self._pool.upstream(backend).post(
                fwd.path, body, self.headers(fwd, backend), read_timeout=self.config.read_timeout
            ),
            budget,
            client_gone,
            body,
        )
        chunks = resp.chunks()
        try:
            if resp.status != 200:
                self.check_status(backend, resp.status, await resp.read(), resp.headers, body)
            left = max(budget - (time.monotonic() - began), 0.001)
            try:
                first = await self._watched(backend, anext(chunks), left, client_gone, body)
            except StopAsyncIteration:
                raise self.transport_failure(
                    backend, UpstreamBroken("empty stream"), body
                ) from None
        except BaseException:
            await resp.aclose()
            raise
        backend.latency.observe_ttft(time.monotonic() - began)
        self.succeed(backend)
        return Opened(backend, claim.hand_over(), resp, chunks, first)

    async def fetch(
        self, backend: Backend, claim: InFlight, remaining: float, path: str, request_id: str
    ) -> Answer:
        """A GET (model metadata): same deadlines, status rules and health signals."""
        budget = max(0.001, min(self.config.first_byte_timeout, remaining))
        upstream = self._pool.upstream(backend)
        headers = {"x-request-id": request_id}

        async def exchange() -> tuple[int, Mapping[str, str], bytes]:
            resp = await upstream.get(path, headers, read_timeout=budget)
            try:
                return resp.status, resp.headers, await resp.read()
            finally:
                await resp.aclose()

        status, got_headers, body = await self._watched(backend, exchange(), budget)
        self.check_status(backend, status, body, got_headers)
        self.succeed(backend)
        return Answer(body, backend)

    # -- judging a try --------------------------------------------------------------------

    async def _watched(
        self,
        backend: Backend,
        work: Awaitable[T],
        budget: float,
        client_gone: ClientGone | None = None,
        body: bytes | None = None,
    ) -> T:
        """The watched wait, with failures below HTTP turned into retries."""
        try:
            return await self.watch(backend, work, budget, client_gone)
        except (Hung, UpstreamFailed, TimeoutError) as exc:
            raise self.transport_failure(backend, exc, body) from None

    def try_timeout(self, backend: Backend, fwd: Forward, remaining: float) -> float:
        derived = try_deadline(backend, fwd.ctx, self.config, time.monotonic(), stream=fwd.stream)
        return max(0.001, min(derived, remaining))

    @staticmethod
    def headers(fwd: Forward, backend: Backend) -> dict[str, str]:
        """What goes upstream besides the body. A site's agent (``ingress = "agent"``)
        also learns the institution (it meters per institution), the data class (it
        checks it) and whether a receipt is required; a model server does not."""
        sent = {"content-type": "application/json", "x-request-id": fwd.record.request_id}
        if backend.site.config.ingress == "agent":
            sent[INSTITUTION_HEADER] = fwd.record.institution_id
            if fwd.ctx.data_class:
                sent[DATA_CLASS_HEADER] = fwd.ctx.data_class
            if fwd.ctx.receipt:
                sent[RECEIPT_HEADER] = "required"
        return sent | fwd.headers if fwd.headers else sent

    def fail(self, backend: Backend, failure: Failure, body: bytes | None = None) -> None:
        """Tell the health tracker; ``body`` (the request sent) tells distinct requests apart."""
        key = request_key(body) if body is not None else None
        self._tracker.on_failure(backend, failure, time.monotonic(), key)
        suspect = self.watch.on_suspect
        if failure is not Failure.refused and suspect is not None and backend.healthy:
            suspect(backend, True)

    def succeed(self, backend: Backend) -> None:
        backend.last_progress = time.monotonic()
        self._tracker.on_success(backend, backend.last_progress)

    def transport_failure(
        self, backend: Backend, exc: Exception, body: bytes | None = None
    ) -> Retry:
        """Map a failure below HTTP (:class:`UpstreamFailed`, or our own deadline's
        ``TimeoutError``) to a retry, and tell the health tracker."""
        if isinstance(exc, Hung):
            return Retry(UpstreamTimeout("The model server stopped answering."))
        if isinstance(exc, UpstreamRefused):
            self.fail(backend, Failure.refused)
            return Retry(BackendRefused("The model server could not be reached."))
        if isinstance(exc, UpstreamTimedOut | TimeoutError):
            if backend.outstanding > self._pool.limit(backend):
                # it waited for one of this access point's connections, all busy: that is
                # load from our side, not a sign that the backend is failing
                return Retry(NoBackendAvailable("Every model server for this model is busy."))
            self.fail(backend, Failure.timeout, body)
            return Retry(UpstreamTimeout("The model server did not answer in time."))
        self.fail(backend, Failure.broken, body)
        return Retry(BackendLost("The connection to the model server failed."))

    def check_status(
        self,
        backend: Backend,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        sent: bytes | None = None,
    ) -> None:
        """Raise :class:`Retry` for statuses worth another backend, ApiError for the rest.

        ``sent`` is the request's body: none of it goes into the log of a rejection."""
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
            self.fail(backend, Failure.server_error, sent)
            lost = BackendLost if status == 502 else UpstreamError  # 502: a gateway lost it
            raise Retry(lost(f"The model server failed (HTTP {status})."))
        if 400 <= status < 500:
            log.warning(
                "backend %s rejected a request: HTTP %d: %s",
                backend.name,
                status,
                loggable_upstream_message(body, sent or b""),
            )
            err = BadRequest(sanitize_upstream_message(body, status), code="upstream_rejected")
            err.status = status if status in (400, 404, 413, 422) else 400
            raise err
        self.fail(backend, Failure.server_error, sent)
        raise UpstreamError(f"The model server failed (HTTP {status}).")


def _retry_after(headers: Mapping[str, str] | None) -> float:
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(raw))) if raw else 1.0
    except ValueError:
        return 1.0
