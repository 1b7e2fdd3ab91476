"""A stream that waits for its model: keep-alive comments, then the answer or an error
event in OpenAI's shape (never [DONE])."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message

from verbund.errors import ModelStarting
from verbund.gateway._keepalive import ColdStream


async def _run(stream: ColdStream) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await stream({"type": "http"}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _slow() -> None:
    await asyncio.sleep(0.25)


async def test_keep_alives_then_the_answer() -> None:
    async def serve() -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b'data: {"x": 1}\n\n'
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    status, body = await _run(ColdStream(_slow, serve, every=0.05))
    assert status == 200
    head, _, rest = body.partition(b"data: ")
    assert head.count(b": keep-alive\n\n") >= 2 and head.replace(b": keep-alive\n\n", b"") == b""
    assert rest.endswith(b"[DONE]\n\n")


async def test_a_model_that_does_not_start_ends_with_an_error_event() -> None:
    async def fail() -> None:
        raise ModelStarting("not ready", headers={"retry-after": "9"})

    async def serve() -> Response:
        raise AssertionError("never served")

    status, body = await _run(ColdStream(fail, serve, every=0.05))
    assert status == 200 and b"[DONE]" not in body
    event = orjson.loads(body.removeprefix(b"data: "))
    assert event["error"]["code"] == "model_starting"


async def test_an_error_answer_after_the_wait_becomes_an_error_event() -> None:
    async def ok() -> None:
        return None

    async def serve() -> Response:
        return JSONResponse({"error": {"code": "no_backend_available"}}, status_code=503)

    _, body = await _run(ColdStream(ok, serve, every=0.05))
    assert orjson.loads(body.removeprefix(b"data: "))["error"]["code"] == "no_backend_available"
