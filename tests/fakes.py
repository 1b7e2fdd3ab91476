"""In-process fake model servers for fast tests of routing and failure handling.

Each :class:`FakeBackend` is an ``httpx.MockTransport`` handler that answers like an
OpenAI-compatible server and can be told to fail in the ways real servers fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class FakeBackend:
    name: str
    # ok | refuse | timeout | status | break_stream | stall_stream | hang_first_byte | hang
    # (stall_stream: two tokens, then nothing for hang_seconds, connection open)
    # | keepalive_first (three SSE comments hang_seconds apart before the first token, as
    # llama.cpp's server pings every 15 s while it reads a long prompt)
    mode: str = "ok"
    status: int = 503
    error_body: bytes = b'{"error": {"message": "overloaded at http://10.0.0.5:8000/x"}}'
    text: str = "Hallo aus dem Rechenzentrum"
    chunks: int = 5
    usage_in_stream: bool = True
    retry_after: str | None = None
    hang_seconds: float = 30.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0
    probe_status: int = 200
    poison: str | None = None  # requests containing this text get ``status``, others an answer
    # answer with this call instead of text: {"name": ..., "arguments": "<json>"}
    tool_call: dict[str, str] | None = None

    def __call__(self, request: httpx.Request) -> Any:
        if request.method == "GET":
            self.probes += 1
            if self.mode == "refuse":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(self.probe_status, json={"object": "list", "data": []})
        body = json.loads(request.content)
        self.calls.append(
            {"path": request.url.path, "body": body, "headers": dict(request.headers)}
        )
        if self.mode == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if self.mode == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "hang":  # a stalled server: accepts, never answers
            return self._hang(request)
        if self.mode == "status" or (
            self.poison is not None and self.poison in request.content.decode()
        ):
            headers = {"content-type": "application/json"}
            if self.retry_after is not None:
                headers["retry-after"] = self.retry_after
            return httpx.Response(self.status, content=self.error_body, headers=headers)
        if request.url.path == "/v1/responses":
            return _responses_answer(self, body)
        if body.get("stream"):
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Stream(self, body)
            )
        if request.url.path == "/v1/embeddings":
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "model": body["model"],
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            )
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        finish = "stop"
        if self.tool_call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [_call(self.tool_call)]}
            finish = "tool_calls"
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
            },
        )

    async def _hang(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.hang_seconds)
        raise httpx.ReadTimeout("stalled", request=request)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, backend: FakeBackend, body: dict[str, Any]) -> None:
        self.backend = backend
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        b = self.backend
        if b.mode == "hang_first_byte":
            raise httpx.ReadTimeout("no first byte")
        if b.mode == "keepalive_first":
            for _ in range(3):
                await asyncio.sleep(b.hang_seconds)
                yield b": ping\r\n\r\n"
        role = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": self.body["model"],
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
        yield b"data: " + json.dumps(role).encode() + b"\n\n"
        if b.tool_call is not None:
            for delta in _call_deltas(b.tool_call):
                yield _chunk(self.body, delta)
            yield _chunk(self.body, {}, "tool_calls")
        first = b.chunks if b.tool_call is not None else 0
        if self.body.get("continue_final_message"):
            # vLLM semantics: continue the final assistant message where it stopped
            first = self.body["messages"][-1]["content"].count(" ")
        for i in range(first, b.chunks):
            if b.mode == "break_stream" and i == 2:
                raise httpx.RemoteProtocolError("peer closed connection")
            if b.mode == "stall_stream" and i == 2:
                await asyncio.sleep(b.hang_seconds)
                raise httpx.ReadTimeout("stalled")
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": self.body["model"],
                "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
            }
            # split an event across two reads, as real networks do
            raw = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            yield raw[:10]
            yield raw[10:]
        opts = self.body.get("stream_options") or {}
        if b.usage_in_stream and opts.get("include_usage"):
            usage = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": self.body["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": 9,
                    "completion_tokens": b.chunks,
                    "total_tokens": 9 + b.chunks,
                },
            }
            yield b"data: " + json.dumps(usage).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"


def _responses_answer(backend: FakeBackend, body: dict[str, Any]) -> httpx.Response:
    """A server with a Responses API of its own (vLLM's): its answer or its events."""
    response = {
        "id": "resp_fake",
        "object": "response",
        "status": "completed",
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": backend.text, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 6, "output_tokens": 3, "total_tokens": 9},
    }
    if not body.get("stream"):
        return httpx.Response(200, json=response)
    events = [
        ("response.created", {"response": {**response, "status": "in_progress", "output": []}}),
        ("response.output_text.delta", {"delta": backend.text}),
        ("response.completed", {"response": response}),
    ]
    raw = b"".join(
        f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
        for kind, data in events
    )
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_Bytes([raw[:40], raw[40:]])
    )


class _Bytes(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for p in self.parts:
            yield p


def _call(call: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"]},
    }


def _call_deltas(call: dict[str, str]) -> list[dict[str, Any]]:
    """A tool call as llama.cpp streams it: name and id first, then the arguments in parts."""
    args = call["arguments"]
    half = len(args) // 2
    first = {"index": 0, "id": "call_1", "type": "function"}
    return [
        {"tool_calls": [{**first, "function": {"name": call["name"], "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]},
    ]


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def transport_factory(fakes: dict[str, FakeBackend]) -> Any:
    def factory(backend: Any) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(fakes[backend.name])

    return factory
