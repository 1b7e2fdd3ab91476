"""The simulated engine, in-process: OpenAI shapes, queueing, prefix cache, metrics, faults."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from verbund.simengine import (
    BrokenStream,
    Engine,
    EngineSpec,
    PrefixCache,
    Prompt,
    create_app,
    filler_token,
)

MODEL = "sim-model"


class Clock:
    """Replaces the engine's sleep: records each pause; blocks while the gate is closed."""

    def __init__(self, open_: bool = True) -> None:
        self.pauses: list[float] = []
        self.gate = asyncio.Event()
        if open_:
            self.gate.set()

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await self.gate.wait()


def make(clock: Clock | None = None, **spec: Any) -> tuple[Engine, httpx.AsyncClient]:
    s = EngineSpec(**{"name": "e1", "models": (MODEL,), **spec})
    engine = Engine(s, sleep=clock.sleep) if clock else Engine(s)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(s, engine)), base_url="http://sim"
    )
    return engine, client


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    engine, client = make(prefill_ms_per_token=0.0, decode_ms_per_token=0.0)
    async with client:
        yield engine, client


def chat(content: str = "Hallo Welt, wie geht es?", **body: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **body}


def sse(text: str) -> list[Any]:
    out: list[Any] = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def answer(n: int, first: int = 0) -> str:
    return "".join(filler_token(first + i) for i in range(n))


async def poll(cond: Callable[[], bool], what: str, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_models_and_health(sim: tuple[Engine, httpx.AsyncClient]) -> None:
    _, c = sim
    assert (await c.get("/health")).status_code == 200
    models = (await c.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL]


async def test_answer_has_max_tokens_of_filler_and_usage(
    sim: tuple[Engine, httpx.AsyncClient],
) -> None:
    _, c = sim
    r = await c.post("/v1/chat/completions", json=chat("x" * 40, max_tokens=5))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": answer(5)}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == 10  # 40 characters / 4
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == 15
    default = (await c.post("/v1/chat/completions", json=chat())).json()
    assert default["usage"]["completion_tokens"] == 16
    assert default["choices"][0]["finish_reason"] == "stop"


async def test_stream_sends_role_content_usage_and_done(
    sim: tuple[Engine, httpx.AsyncClient],
) -> None:
    _, c = sim
    body = chat(max_tokens=3, stream=True, stream_options={"include_usage": True})
    r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:4]]
    assert "".join(contents) == answer(3)
    assert events[4]["choices"][0]["finish_reason"] == "length"
    assert events[5]["choices"] == []
    assert events[5]["usage"]["completion_tokens"] == 3
    assert events[6] == "[DONE]"
    assert len(events) == 7
    plain = sse((await c.post("/v1/chat/completions", json=chat(max_tokens=2, stream=True))).text)
    assert not any(isinstance(e, dict) and "usage" in e for e in plain)
    assert plain[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404),
        ({"model": MODEL, "messages": []}, 400),
        ({"model": MODEL, "messages": ["x"]}, 400),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}, 400),
    ],
)
async def test_bad_requests_get_openai_errors(
    sim: tuple[Engine, httpx.AsyncClient], body: dict[str, Any], status: int
) -> None:
    _, c = sim
    r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert (await c.post("/v1/chat/completions", content=b"[1]")).status_code == 400


async def test_slots_fifo_queue_and_metrics() -> None:
    clock = Clock(open_=False)
    engine, c = make(clock, slots=1, prefill_ms_per_token=1.0, decode_ms_per_token=1.0)
    finished: list[str] = []

    async def ask(tag: str) -> None:
        r = await c.post(
            "/v1/chat/completions", json=chat(tag, max_tokens=2), headers={"x-request-id": tag}
        )
        assert r.status_code == 200
        finished.append(tag)

    async with c:
        tasks = []
        for tag in ("first-request", "second-request", "third-request"):
            tasks.append(asyncio.create_task(ask(tag)))
            n = len(tasks)
            await poll(lambda n=n: engine.stats.received == n, "the request to arrive")
        await poll(lambda: len(engine.running) == 1 and engine.waiting == 2, "one running")
        text = (await c.get("/metrics")).text
        assert 'vllm:num_requests_running{model_name="sim-model"} 1.0' in text
        assert 'vllm:num_requests_waiting{model_name="sim-model"} 2.0' in text
        kv = float(re.search(r"vllm:kv_cache_usage_perc\{[^}]*\} (\S+)", text).group(1))  # type: ignore[union-attr]
        assert 0 < kv < 1
        clock.gate.set()
        await asyncio.gather(*tasks)
    assert finished == ["first-request", "second-request", "third-request"]
    assert engine.waiting == 0 and not engine.running
    log = [rid for _, rid, _ in engine.stats.received_log]
    assert log == ["first-request", "second-request", "third-request"]


async def test_a_client_that_leaves_the_queue_frees_its_place() -> None:
    clock = Clock(open_=False)
    engine, c = make(clock, slots=1)
    async with c:
        first = asyncio.create_task(c.post("/v1/chat/completions", json=chat(max_tokens=1)))
        await poll(lambda: len(engine.running) == 1, "the first to run")
        second = asyncio.create_task(c.post("/v1/chat/completions", json=chat(max_tokens=1)))
        await poll(lambda: engine.waiting == 1, "the second to wait")
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        assert engine.waiting == 0
        clock.gate.set()
        assert (await first).status_code == 200
        assert (await c.post("/v1/chat/completions", json=chat(max_tokens=1))).status_code == 200
    assert engine._busy_slots == 0


async def test_prefill_is_paid_only_for_what_the_prefix_cache_lacks() -> None:
    clock = Clock()
    engine, c = make(clock, prefill_ms_per_token=2.0, decode_ms_per_token=0.0)
    doc = "d" * 4000  # 1000 tokens
    turn1 = [{"role": "system", "content": "s" * 400}, {"role": "user", "content": doc}]
    async with c:
        r1 = (await c.post("/v1/chat/completions", json={"model": MODEL, "messages": turn1})).json()
        assert r1["usage"]["prompt_tokens"] == 1100
        assert r1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert clock.pauses[0] == pytest.approx(1100 * 2.0 / 1000)
        reply = r1["choices"][0]["message"]["content"]
        turn2 = [
            *turn1,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "q" * 80},
        ]
        clock.pauses.clear()
        r2 = (await c.post("/v1/chat/completions", json={"model": MODEL, "messages": turn2})).json()
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (400 + 4000 + len(reply)) // 4
    new_tokens = r2["usage"]["prompt_tokens"] - cached
    assert 20 <= new_tokens <= 21
    assert clock.pauses[0] == pytest.approx(new_tokens * 2.0 / 1000)
    assert engine.stats.prefix_hits == 1


def test_prefix_cache_evicts_least_recent_leaves_first() -> None:
    cache = PrefixCache(capacity=300)

    def convo(*texts: str) -> Prompt:
        return Prompt.of([{"role": "user", "content": t} for t in texts])

    a = convo("a" * 400, "b" * 400)  # 100 + 100 tokens
    cache.insert(a)
    assert cache.size == 200
    assert cache.lookup(convo("a" * 400, "b" * 400, "new")) == 200
    assert cache.lookup(convo("a" * 400, "other")) == 100
    assert cache.lookup(convo("z" * 400)) == 0
    cache.insert(convo("c" * 400, "d" * 400))  # 200 more: the oldest leaf (b) goes
    assert cache.size <= 300
    assert cache.lookup(convo("a" * 400, "b" * 400, "x")) == 100
    assert cache.lookup(convo("c" * 400, "d" * 400, "x")) == 200
    assert PrefixCache(0).lookup(a) == 0


async def test_continue_final_message_continues_the_answer(
    sim: tuple[Engine, httpx.AsyncClient],
) -> None:
    _, c = sim
    full = (await c.post("/v1/chat/completions", json=chat(max_tokens=8))).json()
    text = full["choices"][0]["message"]["content"]
    partial = answer(3)
    assert text.startswith(partial)
    resumed = chat(max_tokens=5, stream=True, continue_final_message=True)
    resumed["messages"].append({"role": "assistant", "content": partial})
    resumed["add_generation_prompt"] = False
    events = sse((await c.post("/v1/chat/completions", json=resumed)).text)
    rest = "".join(
        e["choices"][0]["delta"].get("content", "") for e in events if isinstance(e, dict)
    )
    assert partial + rest == text
    resumed["add_generation_prompt"] = True
    assert (await c.post("/v1/chat/completions", json=resumed)).status_code == 400
    del resumed["add_generation_prompt"]
    assert (await c.post("/v1/chat/completions", json=resumed)).status_code == 400
    not_assistant = chat(continue_final_message=True, add_generation_prompt=False)
    assert (await c.post("/v1/chat/completions", json=not_assistant)).status_code == 400


async def test_fault_error503_then_none(sim: tuple[Engine, httpx.AsyncClient]) -> None:
    engine, c = sim
    assert (await c.post("/_sim/fault", json={"mode": "error503"})).status_code == 200
    r = await c.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == 503
    assert (await c.get("/health")).status_code == 200  # probes still pass: a passive fault
    await c.post("/_sim/fault", json={"mode": "none"})
    assert (await c.post("/v1/chat/completions", json=chat())).status_code == 200
    assert engine.stats.rejected == 1
    assert engine.stats.received == 2


async def test_fault_break_stream_after_n_tokens(sim: tuple[Engine, httpx.AsyncClient]) -> None:
    engine, c = sim
    r = await c.post("/_sim/fault", json={"break_stream_after": 2})
    assert r.json() == {"mode": "break_stream_after", "n": 2, "factor": 10.0}
    with pytest.raises(BrokenStream):  # uvicorn drops the connection; see the real tests
        await c.post("/v1/chat/completions", json=chat(max_tokens=5, stream=True))
    assert engine.stats.broken == 1
    assert engine.stats.completed == 0
    assert not engine.running and engine._busy_slots == 0
    non_stream = await c.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert non_stream.status_code == 200


async def test_fault_slow_scales_every_pause() -> None:
    clock = Clock()
    _, c = make(clock, prefill_ms_per_token=1.0, decode_ms_per_token=10.0)
    async with c:
        await c.post("/_sim/fault", json={"mode": "slow", "factor": 4})
        await c.post("/v1/chat/completions", json=chat("x" * 400, max_tokens=2))
    assert clock.pauses == pytest.approx([0.4, 0.04, 0.04])


async def test_fault_hang_never_answers(sim: tuple[Engine, httpx.AsyncClient]) -> None:
    engine, c = sim
    await c.post("/_sim/fault", json={"mode": "hang"})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.post("/v1/chat/completions", json=chat()), 0.2)
    assert engine.stats.received == 1


@pytest.mark.parametrize(
    "bad", [{"mode": "explode"}, {"mode": "slow", "factor": 0}, {"mode": "none", "n": -1}, []]
)
async def test_fault_rejects_bad_settings(
    sim: tuple[Engine, httpx.AsyncClient], bad: object
) -> None:
    _, c = sim
    assert (await c.post("/_sim/fault", json=bad)).status_code == 400
    assert (await c.get("/_sim/fault")).json()["mode"] == "none"


@pytest.mark.parametrize(
    ("style", "names"),
    [
        ("vllm", [f"vllm:{n}" for n in ("num_requests_running", "num_requests_waiting",
                                           "kv_cache_usage_perc")]),
        ("vllm-old", [f"vllm:{n}" for n in ("num_requests_running", "num_requests_waiting",
                                               "gpu_cache_usage_perc")]),
        ("sglang", ["sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage"]),
    ],
)  # fmt: skip
async def test_metrics_styles(style: str, names: list[str]) -> None:
    _, c = make(metrics_style=style, prefill_ms_per_token=0.0, decode_ms_per_token=0.0)
    async with c:
        await c.post("/v1/chat/completions", json=chat(max_tokens=1))
        text = (await c.get("/metrics")).text
    samples = dict(re.findall(r"^([a-z_:]+)\{model_name=\"sim-model\"\} (\S+)$", text, re.M))
    for name in names:
        assert f"# TYPE {name} gauge" in text
        assert float(samples[name]) == 0.0
    assert float(samples["sim_requests_received_total"]) == 1.0
    other = {"vllm": "sglang:", "vllm-old": "kv_cache_usage", "sglang": "vllm:"}[style]
    assert other not in text


async def test_stats_list_requests_received(sim: tuple[Engine, httpx.AsyncClient]) -> None:
    _, c = sim
    await c.post("/v1/chat/completions", json=chat(), headers={"x-request-id": "r-1"})
    await c.post("/v1/chat/completions", json=chat(stream=True), headers={"x-request-id": "r-2"})
    stats = (await c.get("/_sim/stats")).json()
    assert stats["received"] == 2 and stats["completed"] == 2
    assert [(e["request_id"], e["stream"]) for e in stats["received_log"]] == [
        ("r-1", False),
        ("r-2", True),
    ]
    assert stats["received_log"][0]["time"] <= stats["received_log"][1]["time"]


def test_command_line_builds_the_spec() -> None:
    from verbund.simengine.__main__ import parse_args

    args = parse_args(
        ["--port", "9", "--slots", "2", "--prefill-ms-per-token", "0.25", "--model", "a",
         "--model", "b", "--metrics-style", "sglang", "--prefix-cache-tokens", "100"]
    )  # fmt: skip
    assert (args.port, args.slots, args.prefill_ms_per_token) == (9, 2, 0.25)
    assert args.models == ["a", "b"] and args.metrics_style == "sglang"
    with pytest.raises(SystemExit):
        parse_args(["--port", "9", "--slots", "0"])
