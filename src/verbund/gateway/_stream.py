"""Relaying a streamed answer, and resuming it on another backend when it breaks.

The client's response starts only after the first upstream chunk has arrived, so every
failure before that is an ordinary failover. After it, a broken stream normally ends
with an error event and no ``[DONE]`` (usage status ``incomplete``). If the backend and
another backend of the plan declare ``resume = "continue_final_message"`` (vLLM
semantics), the access point instead sends the conversation plus the partial answer as a
final assistant message with ``continue_final_message: true`` and
``add_generation_prompt: false`` to the other backend, drops its leading role chunk and
relays the rest: the client sees one uninterrupted stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from verbund.errors import ApiError, ClientClosed, UpstreamTimeout
from verbund.federation import (
    Backend,
    Failure,
    UpstreamBroken,
    UpstreamFailed,
    UpstreamResponse,
    UpstreamTimedOut,
)
from verbund.gateway._forward import ClientGone, Forward, Retry, client_headers
from verbund.gateway._sse import SSEUsageFilter, Usage, error_event

if TYPE_CHECKING:
    from verbund.gateway._proxy import Proxy


class Hung(Exception):
    """A confirming probe marked the backend down while a request waited on it."""


log = logging.getLogger("verbund.proxy")

RESUME = "continue_final_message"

_Open = tuple[UpstreamResponse, AsyncIterator[bytes], bytes]


class StreamRelay:
    def __init__(self, proxy: Proxy) -> None:
        self._p = proxy

    async def _connect(
        self,
        backend: Backend,
        fwd: Forward,
        body: bytes,
        remaining: float,
        client_gone: ClientGone | None = None,
    ) -> _Open:
        """Open the upstream stream and read its first chunk inside the try's deadline.

        ``client_gone`` only before the response has started: after that the streaming
        response itself listens for the client's disconnect."""
        budget = self._p.try_timeout(backend, fwd, remaining)
        began = time.monotonic()
        try:
            resp = await self._p.watched(
                backend,
                self._p.upstream(backend).post(
                    fwd.path, body, self._p.headers(fwd), read_timeout=self._p.config.read_timeout
                ),
                budget,
                client_gone,
            )
        except Hung:
            raise Retry(UpstreamTimeout("The model server stopped answering.")) from None
        except (UpstreamFailed, TimeoutError) as exc:
            raise self._p.transport_failure(backend, exc) from None
        chunks = resp.chunks()
        try:
            if resp.status != 200:
                error_body = await resp.read()
                self._p.check_status(backend, resp.status, error_body, resp.headers)
            left = budget - (time.monotonic() - began)
            first = await self._p.watched(backend, anext(chunks), max(left, 0.001), client_gone)
        except (Retry, ApiError):
            await resp.aclose()
            raise
        except Hung:
            await resp.aclose()
            raise Retry(UpstreamTimeout("The model server stopped answering.")) from None
        except (UpstreamFailed, TimeoutError) as exc:
            await resp.aclose()
            raise self._p.transport_failure(backend, exc) from None
        except StopAsyncIteration:
            await resp.aclose()
            raise self._p.transport_failure(backend, UpstreamBroken("empty stream")) from None
        backend.latency.observe_ttft(time.monotonic() - began)
        self._p.succeed(backend)
        return resp, chunks, first

    async def open(
        self, backend: Backend, fwd: Forward, start: float, remaining: float
    ) -> StreamingResponse:
        try:
            opened = await self._connect(backend, fwd, fwd.body, remaining, fwd.client_gone)
        except ClientClosed:
            raise  # the proxy records it
        except ApiError as exc:
            self._p.finish(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        ttft = time.monotonic() - start
        started = [False]

        async def abandoned() -> None:
            # the client left before the first byte was sent: the relay never ran
            if not started[0]:
                backend.outstanding -= 1
                await opened[0].aclose()
                self._p.finish(fwd.record, backend, start, status="incomplete", http_status=200)

        return _GuardedStream(
            self._relay(backend, fwd, opened, start, ttft, started),
            abandoned,
            media_type="text/event-stream",
            headers={**client_headers(backend, fwd), "cache-control": "no-cache"},
        )

    async def _relay(
        self,
        backend: Backend,
        fwd: Forward,
        opened: _Open,
        start: float,
        ttft: float,
        started: list[bool],
    ) -> AsyncIterator[bytes]:
        started[0] = True
        sse = SSEUsageFilter(fwd.drop_usage_chunk, collect_text=_resumable(backend, fwd))
        status = "incomplete"
        current: Backend | None = backend
        resumed = False
        try:
            while current is not None:
                resp, chunks, first = opened
                try:
                    out = sse.feed(first)
                    if out:
                        yield out
                    async for chunk in chunks:
                        current.last_progress = time.monotonic()
                        out = sse.feed(chunk)
                        if out:
                            yield out
                    tail = sse.tail()
                    if tail:
                        yield tail
                except UpstreamFailed as exc:
                    timeout = isinstance(exc, UpstreamTimedOut)
                    self._p.fail(current, Failure.timeout if timeout else Failure.server_error)
                    log.warning(
                        "request %s: stream from %s broke (%s)",
                        fwd.record.request_id,
                        current.name,
                        type(exc).__name__,
                    )
                finally:
                    current.outstanding -= 1
                    await resp.aclose()
                if sse.done:
                    status = "ok"
                    break
                failed, current = current, None
                if sse.collect_text_enabled:
                    resumed_on = await self._resume(fwd, failed, sse, start)
                    if resumed_on is not None:
                        current, opened = resumed_on
                        resumed = True
                        sse.next_segment()
                        continue
                yield error_event(
                    "The model server stopped before the answer was complete.",
                    "stream_interrupted",
                )
        finally:
            usage = sse.usage
            if usage is None or resumed:
                # no usage from the backend, or only for the last segment: count the stream
                prompt = usage.prompt_tokens if usage and not resumed else fwd.prompt_estimate
                usage = Usage(prompt, sse.tokens)
                fwd.record.usage_estimated = True
            self._p.finish(
                fwd.record,
                backend if current is None else current,
                start,
                status=status,
                http_status=200,
                usage=usage,
                ttft=ttft,
            )

    async def _resume(
        self, fwd: Forward, failed: Backend, sse: SSEUsageFilter, start: float
    ) -> tuple[Backend, _Open] | None:
        assert fwd.parsed is not None
        body: dict[str, Any] = dict(fwd.parsed)
        messages = list(body.get("messages") or [])
        body["messages"] = [*messages, {"role": "assistant", "content": "".join(sse.text)}]
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(field), int):
                body[field] = max(1, body[field] - sse.tokens)
        raw = orjson.dumps(body)
        deadline = start + self._p.config.request_deadline
        for b in fwd.plan:
            now = time.monotonic()
            if b is failed or b.config.resume != RESUME or not b.available(now):
                continue
            if now >= deadline or not self._p.budget.try_spend(now):
                return None
            if b.outstanding == 0:
                b.busy_since = now
            b.outstanding += 1
            try:
                opened = await self._connect(b, fwd, raw, deadline - now)
            except (Retry, ApiError):
                b.outstanding -= 1
                continue
            fwd.record.attempts += 1
            log.info(
                "request %s: resumed on %s after %s broke",
                fwd.record.request_id,
                b.name,
                failed.name,
            )
            return b, opened
        return None


class _GuardedStream(StreamingResponse):
    """A streaming response that runs ``cleanup`` even if its body was never iterated."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        cleanup: Callable[[], Awaitable[None]],
        **kwargs: Any,
    ) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


def _resumable(backend: Backend, fwd: Forward) -> bool:
    if backend.config.resume != RESUME or fwd.parsed is None:
        return False
    if fwd.path != "/v1/chat/completions" or fwd.parsed.get("n", 1) not in (1, None):
        return False
    return any(b is not backend and b.config.resume == RESUME for b in fwd.plan)
