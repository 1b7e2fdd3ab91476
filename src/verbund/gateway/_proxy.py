"""The proxy: sends one request along a route plan, with failover, and streams the answer.

A try fails over to the next backend on a refused or broken connection, a timeout before
the first byte, or HTTP 429/502/503/504, inside one overall deadline and at most
``max_attempts`` tries. Once the first byte has gone to the client there is no retry: a
stream that breaks ends with an error event and no ``[DONE]``, and the usage record says
``incomplete``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import orjson
from starlette.responses import Response, StreamingResponse

from verbund.accounting import UsageRecord
from verbund.config import RoutingConfig
from verbund.errors import (
    ApiError,
    BadRequest,
    NoBackendAvailable,
    UpstreamError,
    UpstreamTimeout,
)
from verbund.federation import Backend, Failure, HealthTracker, UpstreamPool
from verbund.gateway._sse import SSEUsageFilter, Usage, error_event

log = logging.getLogger("verbund.proxy")

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
TTFT_WEIGHT = 0.2

_URL = re.compile(r"(?i)\b(?:https?|unix|file)://\S+")
_HOSTPORT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\b[\w.-]+:\d{2,5}\b")
_PATH = re.compile(r"(?:/[\w.-]+){2,}")


def sanitize_upstream_message(raw: bytes) -> str:
    """A backend's error message without addresses, paths or excess length."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None:
            msg = body.get("detail") or body.get("message")
    if not isinstance(msg, str):
        return ""
    for pattern in (_URL, _HOSTPORT, _PATH):
        msg = pattern.sub("[redacted]", msg)
    return msg[:300]


@dataclass(slots=True)
class Forward:
    """One client request, ready to send upstream."""

    path: str
    body: bytes
    stream: bool
    drop_usage_chunk: bool
    plan: list[Backend]
    record: UsageRecord
    prompt_estimate: int = 0


@dataclass(slots=True)
class Answer:
    """A complete upstream answer (HTTP 200) and the backend that gave it."""

    body: bytes
    backend: Backend


class Proxy:
    def __init__(
        self,
        pool: UpstreamPool,
        tracker: HealthTracker,
        routing: RoutingConfig,
        on_usage: Callable[[UsageRecord], None],
    ) -> None:
        self._pool = pool
        self._tracker = tracker
        self._cfg = routing
        self._on_usage = on_usage

    async def forward(self, fwd: Forward) -> Response:
        """Answer a client: a streaming response, or the backend's JSON body as it came."""
        if fwd.stream:
            return await self._run(fwd, self._try_stream)
        answer = await self._run(fwd, self._try_once)
        return Response(
            answer.body,
            status_code=200,
            media_type="application/json",
            headers=_client_headers(answer.backend, fwd),
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
        last_error: ApiError | None = None
        tries = 0
        for backend in fwd.plan[: self._cfg.max_attempts]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tries += 1
            fwd.record.attempts = tries
            backend.outstanding += 1
            try:
                result = await attempt(backend, fwd, start, remaining)
            except _Retry as retry:
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
        self._finish(fwd.record, None, start, status="error", http_status=error.status)
        raise error

    def _timeout(self, remaining: float, first_byte: bool) -> httpx.Timeout:
        read = min(
            self._cfg.first_byte_timeout if first_byte else self._cfg.read_timeout, remaining
        )
        return httpx.Timeout(read, connect=min(self._cfg.connect_timeout, remaining))

    def _headers(self, fwd: Forward) -> dict[str, str]:
        return {"content-type": "application/json", "x-request-id": fwd.record.request_id}

    def _fail(self, backend: Backend, failure: Failure) -> None:
        self._tracker.on_failure(backend, failure, time.monotonic())

    async def _try_once(
        self, backend: Backend, fwd: Forward, start: float, remaining: float
    ) -> Answer:
        client = self._pool.client(backend)
        try:
            resp = await client.post(
                fwd.path,
                content=fwd.body,
                headers=self._headers(fwd),
                timeout=httpx.Timeout(
                    min(self._cfg.read_timeout, remaining),
                    connect=min(self._cfg.connect_timeout, remaining),
                ),
            )
        except httpx.HTTPError as exc:
            raise self._transport_failure(backend, exc) from None
        try:
            self._check_status(backend, resp.status_code, resp.content)
        except _Retry:
            raise
        except ApiError as exc:
            self._finish(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        backend.outstanding -= 1
        self._tracker.on_success(backend)
        elapsed = time.monotonic() - start
        try:
            usage = Usage.from_body(orjson.loads(resp.content))
        except orjson.JSONDecodeError:
            usage = None
        self._finish(
            fwd.record, backend, start, status="ok", http_status=200, usage=usage, ttft=elapsed
        )
        return Answer(resp.content, backend)

    async def _try_stream(
        self, backend: Backend, fwd: Forward, start: float, remaining: float
    ) -> Response:
        client = self._pool.client(backend)
        request = client.build_request(
            "POST",
            fwd.path,
            content=fwd.body,
            headers=self._headers(fwd),
            timeout=self._timeout(remaining, first_byte=True),
        )
        first_byte_budget = min(self._cfg.first_byte_timeout, remaining)
        try:
            resp = await asyncio.wait_for(client.send(request, stream=True), first_byte_budget)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._transport_failure(backend, exc) from None
        chunks = resp.aiter_raw()
        try:
            if resp.status_code != 200:
                body = await resp.aread()
                self._check_status(backend, resp.status_code, body)
            left = first_byte_budget - (time.monotonic() - start)
            first = await asyncio.wait_for(anext(chunks), max(left, 0.001))
        except _Retry:
            await resp.aclose()
            raise
        except ApiError as exc:
            await resp.aclose()
            self._finish(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        except (httpx.HTTPError, TimeoutError, StopAsyncIteration) as exc:
            await resp.aclose()
            raise self._transport_failure(backend, exc) from None
        ttft = time.monotonic() - start
        self._tracker.on_success(backend)
        return StreamingResponse(
            self._relay(backend, fwd, resp, chunks, first, start, ttft),
            media_type="text/event-stream",
            headers={**_client_headers(backend, fwd), "cache-control": "no-cache"},
        )

    async def _relay(
        self,
        backend: Backend,
        fwd: Forward,
        resp: httpx.Response,
        chunks: AsyncIterator[bytes],
        first: bytes,
        start: float,
        ttft: float,
    ) -> AsyncIterator[bytes]:
        sse = SSEUsageFilter(drop_usage_chunk=fwd.drop_usage_chunk)
        status = "incomplete"
        try:
            out = sse.feed(first)
            if out:
                yield out
            try:
                async for chunk in chunks:
                    out = sse.feed(chunk)
                    if out:
                        yield out
            except httpx.HTTPError as exc:
                failure = (
                    Failure.timeout
                    if isinstance(exc, httpx.TimeoutException)
                    else Failure.server_error
                )
                self._fail(backend, failure)
                log.warning(
                    "request %s: stream from %s broke (%s)",
                    fwd.record.request_id,
                    backend.name,
                    type(exc).__name__,
                )
                yield error_event(
                    "The model server stopped before the answer was complete.", "stream_interrupted"
                )
                return
            tail = sse.tail()
            if tail:
                yield tail
            if sse.done:
                status = "ok"
            else:
                yield error_event(
                    "The model server ended the stream before it was complete.",
                    "stream_interrupted",
                )
        finally:
            backend.outstanding -= 1
            await resp.aclose()
            usage = sse.usage
            if usage is None:
                # the backend sent no usage in the stream: count tokens, estimate the prompt
                usage = Usage(fwd.prompt_estimate, sse.tokens)
                fwd.record.usage_estimated = True
            self._finish(
                fwd.record, backend, start, status=status, http_status=200, usage=usage, ttft=ttft
            )

    def _transport_failure(self, backend: Backend, exc: BaseException) -> _Retry:
        if isinstance(exc, httpx.ConnectError):
            self._fail(backend, Failure.refused)
            return _Retry(NoBackendAvailable("The model server could not be reached."))
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            self._fail(backend, Failure.timeout)
            return _Retry(UpstreamTimeout("The model server did not answer in time."))
        self._fail(backend, Failure.server_error)
        return _Retry(UpstreamError("The connection to the model server failed."))

    def _check_status(self, backend: Backend, status: int, body: bytes) -> None:
        if status == 200:
            return
        if status in RETRYABLE_STATUS:
            if status != 429:
                self._fail(backend, Failure.server_error)
            if status == 429:
                raise _Retry(
                    NoBackendAvailable(
                        "Every model server for this model is busy.", headers={"retry-after": "2"}
                    )
                )
            raise _Retry(UpstreamError(f"The model server failed (HTTP {status})."))
        if 400 <= status < 500:
            detail = sanitize_upstream_message(body)
            err = BadRequest(
                "The model server rejected the request" + (f": {detail}" if detail else "."),
                code="upstream_rejected",
            )
            err.status = status if status in (400, 404, 413, 422) else 400
            raise err
        self._fail(backend, Failure.server_error)
        raise UpstreamError(f"The model server failed (HTTP {status}).")

    def _finish(
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
                if rec.stream:  # a non-streamed answer's latency is not a time to first token
                    prev = backend.ttft_ewma
                    backend.ttft_ewma = ttft if prev is None else prev + TTFT_WEIGHT * (ttft - prev)
        if usage is not None:
            rec.prompt_tokens = usage.prompt_tokens
            rec.completion_tokens = usage.completion_tokens
        self._on_usage(rec)


class _Retry(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _client_headers(backend: Backend, fwd: Forward) -> dict[str, str]:
    return {"x-verbund-site": backend.site.name, "x-request-id": fwd.record.request_id}
