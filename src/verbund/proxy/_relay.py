"""Relaying a streamed answer, and resuming it on another backend when it breaks.

The client's response starts only after the first upstream chunk has arrived, so every
failure before that is an ordinary failover. After it, a broken stream normally ends
with an error event and no ``[DONE]`` (usage status ``incomplete``). If the backend and
another backend of the plan declare ``resume = "continue_final_message"`` (vLLM
semantics), the access point instead sends the conversation plus the partial answer as a
final assistant message with ``continue_final_message: true`` and
``add_generation_prompt: false`` to the other backend, through the same failover loop,
drops its leading role chunk and relays the rest: the client sees one uninterrupted
stream.

A stream that stalls part-way (the backend keeps the connection and sends nothing) is
cut after ``stream_stall_factor`` times the backend's usual time per token, at least
``stream_stall_floor`` seconds (:class:`~verbund.proxy._watch.StallWatch`), counted as
the backend's failure, and then resumed or ended like a broken one. Before its first
event a stream may carry only keep-alive comments while the server reads a long prompt;
that wait is bounded by ``first_byte_timeout`` instead.

The relay owns two things handed over by the try that opened the stream: the backend's
in-flight claim and the request's usage recording. It releases and closes both when the
stream ends, however it ends (also when the client left before the first byte).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from verbund.accounting import Recording
from verbund.errors import ApiError
from verbund.federation import Backend, Failure, InFlight, UpstreamFailed, UpstreamTimedOut
from verbund.proxy._attempt import Attempts, Opened
from verbund.proxy._failover import Failover
from verbund.proxy._forward import Forward, Retry, client_headers, fill_record
from verbund.proxy._sse import SSEUsageFilter, Usage, error_event
from verbund.proxy._watch import Stalled, StallWatch, stream_stall_bound

__all__ = ["RESUME", "StreamRelay"]

log = logging.getLogger("verbund.proxy")

RESUME = "continue_final_message"
_USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class StreamRelay:
    def __init__(self, attempts: Attempts, failover: Failover, write_timeout: float) -> None:
        self._tries = attempts
        self._failover = failover
        self._write_timeout = write_timeout

    async def open(
        self,
        backend: Backend,
        claim: InFlight,
        remaining: float,
        fwd: Forward,
        start: float,
        deadline: float,
    ) -> StreamingResponse:
        """The stream try of the failover loop: a response once the first chunk is in."""
        try:
            opened = await self._tries.open(
                backend, claim, remaining, fwd, fwd.body_for(backend), fwd.client_gone
            )
        except ApiError as exc:
            fill_record(fwd.record, backend, start, status="error", http_status=exc.status)
            raise
        ttft = time.monotonic() - start
        recording = fwd.recording.hand_over()
        started = [False]
        relay = self._relay(fwd, opened, recording, start, deadline, ttft, started)

        async def finished() -> None:
            if started[0]:
                # however the response ended (a client gone mid-stream makes ``send``
                # fail), the relay's clean-up runs now, not when the generator is collected
                await relay.aclose()
                return
            # the client left before the first byte was sent: the relay never ran
            await opened.aclose()
            fill_record(fwd.record, backend, start, status="incomplete", http_status=200)
            recording.close()

        return _GuardedStream(
            relay,
            finished,
            self._write_timeout,
            media_type="text/event-stream",
            headers={**client_headers(backend, fwd), "cache-control": "no-cache"},
        )

    async def _relay(
        self,
        fwd: Forward,
        opened: Opened,
        recording: Recording,
        start: float,
        deadline: float,
        ttft: float,
        started: list[bool],
    ) -> AsyncGenerator[bytes, None]:
        started[0] = True
        sse = SSEUsageFilter(
            fwd.drop_usage_chunk,
            collect_text=_resumable(opened.backend, fwd),
            prompt_estimate=fwd.prompt_estimate if fwd.path in _USAGE_PATHS else None,
        )
        status = "incomplete"
        current: Opened | None = opened
        last = opened.backend
        resumed = False
        watch = StallWatch()
        message = "The model server stopped before the answer was complete."
        try:
            while current is not None:
                last = current.backend
                bound = stream_stall_bound(last, self._tries.config)
                began, tokens = time.monotonic(), sse.tokens
                try:
                    out = sse.feed(current.first)
                    if out:
                        yield out
                    # Until the first event, keep-alive comments are all a server sends
                    # while it reads a long prompt (llama.cpp's pings every 15 s): that
                    # wait is bounded like the first byte, not like the gap between tokens.
                    reading_prompt = not sse.events
                    if reading_prompt:
                        bound = max(bound, self._tries.config.first_byte_timeout)
                    watch.arm(bound)
                    chunks = current.chunks
                    while True:
                        try:
                            chunk = await watch.wait(anext(chunks))
                        except StopAsyncIteration:
                            break
                        last.last_progress = time.monotonic()
                        out = sse.feed(chunk)
                        if reading_prompt and sse.events:
                            reading_prompt = False
                            bound = stream_stall_bound(last, self._tries.config)
                            watch.arm(bound)
                        if out:
                            yield out
                    tail = sse.tail()
                    if tail:
                        yield tail
                    if sse.tokens - tokens > 1:
                        per_token = (time.monotonic() - began) / (sse.tokens - tokens - 1)
                        last.latency.observe_tpot(per_token)
                except UpstreamFailed as exc:
                    timeout = isinstance(exc, UpstreamTimedOut)
                    failure = Failure.timeout if timeout else Failure.broken
                    self._tries.fail(last, failure, fwd.body)
                    log.warning(
                        "request %s: stream from %s broke (%s)",
                        fwd.record.request_id,
                        last.name,
                        type(exc).__name__,
                    )
                except Stalled:
                    self._tries.fail(last, Failure.timeout, fwd.body)
                    message = (
                        f"The model server sent nothing for {bound:.0f} s; "
                        "the answer is incomplete."
                    )
                    log.warning(
                        "request %s: stream from %s stalled (no chunk for %.1fs)",
                        fwd.record.request_id,
                        last.name,
                        bound,
                    )
                finally:
                    await current.aclose()
                if sse.done:
                    status = "ok"
                    break
                current = None
                if sse.collect_text_enabled:
                    current = await self._resume(fwd, last, sse, start, deadline)
                    if current is not None:
                        resumed = True
                        sse.next_segment()
                        continue
                yield error_event(message, "stream_interrupted")
        finally:
            watch.close()
            if current is not None:  # the client left mid-stream
                await current.aclose()
            usage = sse.usage
            if usage is None or resumed:
                # no usage from the backend, or only for the last segment: count the stream
                prompt = usage.prompt_tokens if usage and not resumed else fwd.prompt_estimate
                usage = Usage(prompt, sse.tokens)
                fwd.record.usage_estimated = True
            fill_record(
                fwd.record, last, start, status=status, http_status=200, usage=usage, ttft=ttft
            )
            recording.close()

    async def _resume(
        self, fwd: Forward, failed: Backend, sse: SSEUsageFilter, start: float, deadline: float
    ) -> Opened | None:
        """The answer so far, continued on another resumable backend of the plan."""
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

        async def attempt(backend: Backend, claim: InFlight, remaining: float) -> Opened:
            try:
                return await self._tries.open(backend, claim, remaining, fwd, raw)
            except ApiError as exc:  # this backend refused the continuation: try another
                raise Retry(exc) from None

        candidates = (b for b in fwd.plan if b is not failed and b.config.resume == RESUME)
        try:
            opened = await self._failover.run(
                candidates,
                attempt,
                record=fwd.record,
                start=start,
                deadline=deadline,
                retrying=True,
                stream=True,
            )
        except ApiError:
            return None
        log.info(
            "request %s: resumed on %s after %s broke",
            fwd.record.request_id,
            opened.backend.name,
            failed.name,
        )
        return opened


class _GuardedStream(StreamingResponse):
    """A streaming response that runs ``cleanup`` however it ends (also when its body was
    never iterated), and ends itself when its reader stops taking bytes.

    A client reading at a byte a second would otherwise hold its backend's slot, its
    seats and its place in the process's count for ever: a write that cannot complete
    within ``write_timeout`` (the connection's buffers are full) ends the stream."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        cleanup: Callable[[], Awaitable[None]],
        write_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = StallWatch()
        watch.arm(self._write_timeout)

        async def send_watched(message: Message) -> None:
            await watch.wait(send(message))

        try:
            await super().__call__(scope, receive, send_watched)
        except Stalled:
            log.info(
                "a client stopped reading its stream for %.0f s; ended it", self._write_timeout
            )
        finally:
            watch.close()
            await self._cleanup()


def _resumable(backend: Backend, fwd: Forward) -> bool:
    if backend.config.resume != RESUME or fwd.parsed is None:
        return False
    if fwd.path != "/v1/chat/completions" or fwd.parsed.get("n", 1) not in (1, None):
        return False
    return any(b is not backend and b.config.resume == RESUME for b in fwd.plan)
