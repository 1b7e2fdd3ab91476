"""The relay's chat completion stream, passed on as Responses API events as it arrives.

An async iterator object rather than a generator: the response that owns the relay
closes the relay itself however the stream ends, and an iterator object needs no
finalisation of its own when the client leaves mid-stream.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import orjson

from verbund.responses._events import EventTranslator

__all__ = ["TranslatedStream"]

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class TranslatedStream:
    """Chat completion SSE bytes in, Responses API SSE bytes out.

    ``on_end`` gets the final Response object once (completed, incomplete or failed), for
    stored responses."""

    def __init__(
        self,
        chat: AsyncIterable[str | bytes | memoryview],
        events: EventTranslator,
        on_end: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._chat = aiter(chat)
        self._events = events
        self._on_end = on_end
        self._buf = b""
        self._started = False
        self._finished = False

    def __aiter__(self) -> TranslatedStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._started:
            self._started = True
            return self._events.start()
        while not self._finished:
            try:
                chunk = await anext(self._chat)
            except StopAsyncIteration:
                out = self._end(self._buf)
                self._buf = b""
                if not self._events.ended:
                    out += self._events.fail(
                        "The model server stopped before the answer was complete."
                    )
                self._finished = True
                await self._ended()
                if out:
                    return out
                break
            buf = self._buf + (chunk.encode() if isinstance(chunk, str) else bytes(chunk))
            out_parts: list[bytes] = []
            pos = 0
            for m in _EVENT_END.finditer(buf):
                out_parts.append(self._translate(buf[pos : m.start()]))
                pos = m.end()
            self._buf = buf[pos:]
            out = b"".join(out_parts)
            if self._events.ended:
                self._finished = True
                await self._ended()
            if out:
                return out
        raise StopAsyncIteration

    def _end(self, rest: bytes) -> bytes:
        return self._translate(rest) if rest.strip() else b""

    async def _ended(self) -> None:
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            await on_end(self._events.response)

    def _translate(self, event: bytes) -> bytes:
        if self._events.ended:
            return b""
        data = None
        for line in event.splitlines():
            if line.startswith(b"data:"):
                data = line[5:].strip()
        if data is None:
            return b""
        if data == b"[DONE]":
            return self._events.finish()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code")
            return self._events.fail(
                message if isinstance(message, str) else "The answer broke off.",
                code if isinstance(code, str) else "server_error",
            )
        return self._events.feed(chunk)
