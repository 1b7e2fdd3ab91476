"""A streaming answer that starts before its model does: SSE keep-alive comments first.

A client that streams from a model that is still starting would otherwise see nothing
for as long as the start takes, and many clients (and proxies) give up after 30-60
seconds of silence. :class:`ColdStream` answers 200 ``text/event-stream`` at once, sends
``: keep-alive`` comments (which SSE clients ignore) while ``wait`` runs, and then lets
the real answer — the response ``serve`` returns — write its body into the same stream.
An error after the headers went out (the model did not start in time) becomes an
data event in OpenAI's error shape, without ``[DONE]`` (as the proxy ends a broken stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from verbund.errors import ApiError

__all__ = ["ColdStream"]

KEEPALIVE = b": keep-alive\n\n"


class ColdStream(Response):
    def __init__(
        self,
        wait: Callable[[], Awaitable[None]],
        serve: Callable[[], Awaitable[Response]],
        every: float,
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self._wait = wait
        self._serve = serve
        self._every = every

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        task = asyncio.ensure_future(self._wait())
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=self._every)
                if not done:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            task.result()
            inner = await self._serve()
        except ApiError as exc:
            await self._error(send, exc.body())
            return
        finally:
            if not task.done():  # the client left while waiting
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        status = 200
        held: list[bytes] = []

        async def into_stream(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                return
            if status >= 400:  # an error answer: one error event once it is whole
                held.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        body = orjson.loads(b"".join(held))
                    except orjson.JSONDecodeError:
                        body = {"error": {"message": "The model failed.", "type": "server_error",
                                          "code": "upstream_error", "param": None}}  # fmt: skip
                    await self._error(send, body)
                return
            await send(message)

        await inner(scope, receive, into_stream)

    @staticmethod
    async def _error(send: Send, body: object) -> None:
        data = b"data: " + orjson.dumps(body) + b"\n\n"  # as the proxy ends a broken stream
        await send({"type": "http.response.body", "body": data, "more_body": False})
