"""The simulated engine's HTTP face: an OpenAI-compatible subset, Prometheus metrics, faults.

Routes: ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions`` (streamed or
not, with vLLM's ``continue_final_message``), ``GET /metrics`` (vLLM or SGLang names),
``GET|POST /_sim/fault`` and ``GET /_sim/stats`` for tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from verbund.simengine._engine import Engine, EngineSpec, Fault, FaultMode, Generation

__all__ = ["BrokenStream", "create_app", "render_metrics"]


class BrokenStream(Exception):
    """Raised inside a streamed answer to make the server drop the connection (a fault)."""


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"'{name}' must be an integer of at least 1.")
    return value


def _check(body: dict[str, Any]) -> tuple[list[Any], int | None, bool]:
    """Messages, max tokens (if set) and whether to continue the final message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array.")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ValueError("Every message must be an object with a string 'role'.")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    continue_final = body.get("continue_final_message") is True
    if continue_final:
        if body.get("add_generation_prompt", True) is not False:
            raise ValueError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        if messages[-1].get("role") != "assistant":
            raise ValueError("`continue_final_message` needs an assistant message at the end.")
    return messages, max_tokens, continue_final


async def chat_completions(request: Request) -> Response:
    engine = _engine(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "The body must be a JSON object.", "BadRequestError")
    stream = body.get("stream") is True
    engine.record_received(request.headers.get("x-request-id", ""), stream)
    model = body.get("model")
    if model not in engine.spec.models:
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    try:
        messages, max_tokens, continue_final = _check(body)
    except ValueError as exc:
        return _error(400, str(exc), "BadRequestError")
    fault = engine.fault
    if fault.mode == "error503":
        engine.stats.rejected += 1
        return _error(503, "The server is overloaded (simulated).", "ServiceUnavailableError")
    if fault.mode == "hang":
        await asyncio.Event().wait()  # until the server shuts down
    gen = engine.new_generation(
        messages, max_tokens or engine.spec.default_max_tokens, continue_final
    )
    finish = "length" if max_tokens else "stop"  # the answer always fills max_tokens
    answer = _Answer(engine, str(model), gen, messages, continue_final, finish)
    if stream:
        opts = body.get("stream_options")
        usage = isinstance(opts, dict) and opts.get("include_usage") is True
        return StreamingResponse(answer.events(usage), media_type="text/event-stream")
    return JSONResponse(await answer.complete())


class _Answer:
    """One answer, streamed as server-sent events or returned whole."""

    def __init__(
        self,
        engine: Engine,
        model: str,
        gen: Generation,
        messages: list[Any],
        continued: bool,
        finish: str,
    ) -> None:
        self.engine = engine
        self.model = model
        self.gen = gen
        self.messages = messages
        self.continued = continued
        self.finish = finish
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.tokens: list[str] = []

    def _usage(self) -> dict[str, Any]:
        prompt, done = self.gen.prompt.tokens, len(self.tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": self.gen.cached_tokens},
        }

    def _finished(self) -> None:
        self.engine.remember_answer(self.messages, "".join(self.tokens), self.continued)

    async def complete(self) -> dict[str, Any]:
        run = self.engine.run(self.gen)
        try:
            async for token in run:
                if token:
                    self.tokens.append(token)
        finally:
            await run.aclose()
        self._finished()
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.tokens)},
                    "logprobs": None,
                    "finish_reason": self.finish,
                }
            ],
            "usage": self._usage(),
        }

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def _delta(self, delta: dict[str, str], finish: str | None = None) -> bytes:
        return self._chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    async def events(self, include_usage: bool) -> AsyncIterator[bytes]:
        run = self.engine.run(self.gen)
        try:
            async for token in run:
                if not token:  # prefill done: the role chunk is the first byte
                    yield self._delta({"role": "assistant", "content": ""})
                    continue
                fault = self.engine.fault  # may change while the answer streams
                if fault.mode == "break_stream_after" and len(self.tokens) >= fault.n:
                    self.engine.stats.broken += 1
                    raise BrokenStream("stream broken on purpose (simulated fault)")
                self.tokens.append(token)
                yield self._delta({"content": token})
        finally:
            await run.aclose()
        self._finished()
        yield self._delta({}, self.finish)
        if include_usage:
            yield self._chunk([], usage=self._usage())
        yield b"data: [DONE]\n\n"


async def list_models(request: Request) -> Response:
    engine = _engine(request)
    created = int(time.time())
    data = [
        {"id": m, "object": "model", "created": created, "owned_by": "simengine"}
        for m in engine.spec.models
    ]
    return JSONResponse({"object": "list", "data": data})


async def health(request: Request) -> Response:
    return Response(status_code=200)


_GAUGES = {
    "vllm": (
        ("vllm:num_requests_running", "Number of requests in model execution batches."),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
    ),
    "vllm-old": (
        ("vllm:num_requests_running", "Number of requests currently running on GPU."),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
        ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage."),
    ),
    "sglang": (
        ("sglang:num_running_reqs", "The number of running requests."),
        ("sglang:num_queue_reqs", "The number of requests in the waiting queue."),
        ("sglang:token_usage", "The token usage."),
    ),
}


def render_metrics(engine: Engine) -> str:
    """Prometheus text in the style of the engine being imitated, plus ``sim_*`` counters."""
    spec = engine.spec
    label = '{model_name="' + spec.models[0].replace('"', "") + '"}'
    values = (float(len(engine.running)), float(engine.waiting), engine.kv_usage)
    lines: list[str] = []
    for (name, help_text), value in zip(_GAUGES[spec.metrics_style], values, strict=True):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{label} {value}"]
    s = engine.stats
    prefix = "sglang" if spec.metrics_style == "sglang" else "vllm"
    for name, value in (
        (f"{prefix}:prompt_tokens", s.prompt_tokens),
        (f"{prefix}:generation_tokens", s.generation_tokens),
        ("sim_requests_received", s.received),
        ("sim_requests_completed", s.completed),
        ("sim_prefix_cache_hits", s.prefix_hits),
        ("sim_prefix_cache_hit_tokens", s.cached_tokens),
    ):
        lines += [f"# TYPE {name} counter", f"{name}_total{label} {float(value)}"]
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    return PlainTextResponse(
        render_metrics(_engine(request)), media_type="text/plain; version=0.0.4"
    )


def _fault_view(fault: Fault) -> dict[str, Any]:
    return {"mode": fault.mode, "n": fault.n, "factor": fault.factor}


async def fault(request: Request) -> Response:
    engine = _engine(request)
    if request.method == "GET":
        return JSONResponse(_fault_view(engine.fault))
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "The body must be a JSON object.", "BadRequestError")
    if "break_stream_after" in body and "mode" not in body:
        body = {"mode": "break_stream_after", "n": body["break_stream_after"]}
    mode, n, factor = body.get("mode"), body.get("n", 0), body.get("factor", 10.0)
    if mode not in get_args(FaultMode):
        modes = ", ".join(get_args(FaultMode))
        return _error(400, f"'mode' must be one of {modes}.", "BadRequestError", "mode")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return _error(400, "'n' must be a non-negative integer.", "BadRequestError", "n")
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 0:
        return _error(400, "'factor' must be a positive number.", "BadRequestError", "factor")
    engine.fault = Fault(mode=cast(FaultMode, mode), n=n, factor=float(factor))
    return JSONResponse(_fault_view(engine.fault))


async def stats(request: Request) -> Response:
    engine = _engine(request)
    s = engine.stats
    return JSONResponse(
        {
            "name": engine.spec.name,
            "received": s.received,
            "completed": s.completed,
            "rejected": s.rejected,
            "broken": s.broken,
            "cancelled": s.cancelled,
            "running": len(engine.running),
            "waiting": engine.waiting,
            "prompt_tokens": s.prompt_tokens,
            "cached_tokens": s.cached_tokens,
            "prefix_hits": s.prefix_hits,
            "generation_tokens": s.generation_tokens,
            "prefix_cache_size": engine.cache.size,
            "received_log": [
                {"time": t, "request_id": rid, "stream": st} for t, rid, st in s.received_log
            ],
        }
    )


def create_app(spec: EngineSpec, engine: Engine | None = None) -> Starlette:
    """One simulated engine; pass ``engine`` to share or inspect its state in tests."""
    app = Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/_sim/fault", fault, methods=["GET", "POST"]),
            Route("/_sim/stats", stats, methods=["GET"]),
        ]
    )
    app.state.engine = engine or Engine(spec)
    return app
