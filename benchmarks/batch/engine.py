"""A synthetic OpenAI-compatible engine: a fixed number of slots and a time per token.

Models what matters for scheduling in an LLM server like vLLM: at most ``slots``
requests run at once (more wait in a FIFO queue), each takes ``prefill_ms`` before its
first token and then ``decode_ms`` per generated token, independent of load. Streamed
answers send one event per ``tokens_per_event`` tokens. ``GET /stats`` reports busy
slot-seconds per traffic kind (streamed = interactive, not streamed = batch), counting
running requests up to now, so a caller can compute utilisation over any window.

Run: ``python -m benchmarks.batch.engine --port 9001 --slots 32``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Engine:
    def __init__(self, slots: int, prefill: float, decode: float, per_event: int) -> None:
        self.slots = slots
        self.prefill = prefill
        self.decode = decode
        self.per_event = per_event
        self.sem = asyncio.Semaphore(slots)
        self.busy = {"stream": 0.0, "batch": 0.0}
        self.done = {"stream": 0, "batch": 0}
        self.queued = {"stream": 0, "batch": 0}  # requests that found every slot busy
        self.running: dict[int, tuple[str, float]] = {}
        self.waiting = 0
        self.started = time.monotonic()
        self.stalls: list[tuple[float, float]] = []  # (when, how long) event-loop stalls

    async def watch_loop(self) -> None:
        """Record event-loop stalls over 100 ms (so the benchmark can tell who was late)."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            late = time.monotonic() - t - 0.01
            if late > 0.02:
                self.stalls.append((t, late))

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        busy = dict(self.busy)
        for kind, start in self.running.values():
            busy[kind] += now - start
        return {
            "now": now,
            "slots": self.slots,
            "busy_slot_seconds": busy,
            "completed": self.done,
            "queued": self.queued,
            "running": len(self.running),
            "waiting": self.waiting,
            "stalls": self.stalls[-2000:],
        }

    async def run(self, kind: str, tokens: int) -> AsyncIterator[int]:
        """Holds a slot; yields after the prefill and after every event's tokens."""
        if self.sem.locked():
            self.queued[kind] += 1
        self.waiting += 1
        async with self.sem:
            self.waiting -= 1
            key = id(asyncio.current_task())
            start = time.monotonic()
            self.running[key] = (kind, start)
            try:
                await asyncio.sleep(self.prefill)
                sent = 0
                yield 0
                while sent < tokens:
                    n = min(self.per_event, tokens - sent)
                    await asyncio.sleep(n * self.decode)
                    sent += n
                    yield sent
            finally:
                del self.running[key]
                self.busy[kind] += time.monotonic() - start
                self.done[kind] += 1


def _chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": "chatcmpl-synth",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def build_app(engine: Engine) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        model = body.get("model", "synth")
        tokens = int(body.get("max_tokens") or 16)
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        if body.get("stream"):

            async def events() -> AsyncIterator[bytes]:
                last = 0
                async for sent in engine.run("stream", tokens):
                    if sent == 0:
                        yield _chunk(model, "")  # the first token's event
                        continue
                    yield _chunk(model, "tok " * (sent - last))
                    last = sent
                yield _chunk(model, None, "length")
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "id": "chatcmpl-synth",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": tokens,
                            "total_tokens": prompt + tokens,
                        },
                    }
                    yield b"data: " + orjson.dumps(usage) + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        async for _ in engine.run("batch", tokens):
            pass
        return JSONResponse(
            {
                "id": "chatcmpl-synth",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "tok " * tokens},
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": tokens,
                    "total_tokens": prompt + tokens,
                },
            }
        )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "synth", "object": "model"}]})

    async def stats(request: Request) -> Response:
        return JSONResponse(engine.stats())

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.watch_loop())
        yield
        task.cancel()

    return Starlette(
        lifespan=contextlib.asynccontextmanager(lifespan),
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", models, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--prefill-ms", type=float, default=50.0)
    p.add_argument("--decode-ms", type=float, default=24.0)
    p.add_argument("--tokens-per-event", type=int, default=4)
    a = p.parse_args()
    engine = Engine(a.slots, a.prefill_ms / 1000, a.decode_ms / 1000, a.tokens_per_event)
    uvicorn.run(
        build_app(engine),
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
