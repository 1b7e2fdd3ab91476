"""Issue-3 failover semantics with fake backends: Retry-After, the retry budget, derived
deadlines against a stalled backend, batch priority and resuming a broken stream."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import Gateway, make_config
from tests.gateway.test_proxy import sse_events, usage_rows


async def test_429_retry_after_keeps_requests_away_without_ejecting(gw: Gateway) -> None:
    west = gw.fakes["west-1"]
    west.mode, west.status, west.retry_after = "status", 429, "20"
    resp = await gw.chat()
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] != "west"
    backend = gw.services.federation.backends["west-1"]
    assert backend.busy_until > time.monotonic() + 15
    assert backend.ejections == 0 and backend.healthy
    for _ in range(3):
        await gw.chat()
    assert len(west.calls) == 1


async def test_all_busy_is_503_with_retry_after(gw: Gateway) -> None:
    for f in gw.fakes.values():
        f.mode, f.status, f.retry_after = "status", 429, "3"
    resp = await gw.chat()
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "3"


async def test_retry_budget_stops_failover_under_mass_failure(
    gateway_factory: Any, tmp_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        routing={
            "retry_budget_ratio": 0.2,
            "retry_budget_min_per_second": 0.0,
            "eject_after_failures": 1000,
            "max_attempts": 3,
        },
    )
    async with gateway_factory(cfg) as gw:
        for f in gw.fakes.values():
            f.mode, f.status = "status", 503
        n = 100
        for _ in range(n):
            assert (await gw.chat()).status_code == 502
        extra = gw.upstream_calls() - n
        # 20 % of requests plus the initial reserve of 10 tokens
        assert extra <= 0.2 * n + 10, extra


async def test_a_stalled_backend_costs_about_a_second_not_a_minute(
    gateway_factory: Any, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, routing={"first_byte_timeout": 60, "min_first_byte_timeout": 0.3})
    async with gateway_factory(cfg) as gw:
        west = gw.services.federation.backends["west-1"]
        for _ in range(5):  # it has been fast so far
            west.latency.observe_ttft(0.05)
        gw.fakes["west-1"].mode = "hang"
        began = time.monotonic()
        resp = await gw.chat(stream=True, max_tokens=8)
        elapsed = time.monotonic() - began
        assert resp.status_code == 200 and resp.headers["x-verbund-site"] != "west"
        assert elapsed < 3.0, elapsed


async def test_batch_priority_only_takes_spare_capacity(gw: Gateway) -> None:
    for b in gw.services.federation.backends.values():
        b.outstanding = 1  # no capacity hint: one slot each, all busy
    headers = {**gw.auth(), "x-verbund-priority": "batch"}
    body = {"model": "smol", "messages": [{"role": "user", "content": "x"}]}
    resp = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "capacity_reserved"
    assert (await gw.chat()).status_code == 200  # interactive still goes through
    gw.services.federation.backends["ost-1"].outstanding = 0
    resp = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] == "ost"
    rows = await usage_rows(gw)
    assert rows[-1].priority == "batch"
    bad = await gw.client.post(
        "/v1/chat/completions", json=body, headers={**gw.auth(), "x-verbund-priority": "urgent"}
    )
    assert bad.status_code == 400


def resumable_config(tmp_path: Path) -> Any:
    cfg = make_config(tmp_path).model_dump(mode="json")
    for site in cfg["sites"]:
        site["backends"][0]["resume"] = "continue_final_message"
    from verbund.config import parse_config

    return parse_config(cfg)


async def test_a_broken_stream_resumes_on_another_backend(
    gateway_factory: Any, tmp_path: Path
) -> None:
    async with gateway_factory(resumable_config(tmp_path)) as gw:
        gw.fakes["west-1"].mode = "break_stream"  # breaks after t0, t1
        resp = await gw.chat(stream=True, max_tokens=10)
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not any("error" in c for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "t0 t1 t2 t3 t4 "
        roles = [c for c in chunks if "role" in c["choices"][0]["delta"]]
        assert len(roles) == 1, "the continuation's role chunk is dropped"
        resumed = [c for f in gw.fakes.values() for c in f.calls if f.name != "west-1"]
        sent = resumed[0]["body"]
        assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
        assert sent["messages"][-1] == {"role": "assistant", "content": "t0 t1 "}
        assert sent["max_tokens"] == 8
        row = (await usage_rows(gw))[-1]
        assert row.status == "ok" and row.attempts == 2 and row.completion_tokens == 5
        assert all(b.outstanding == 0 for b in gw.services.federation.backends.values())


async def test_without_resume_a_broken_stream_ends_with_an_error(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "break_stream"
    events = sse_events((await gw.chat(stream=True)).text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    assert sum(len(f.calls) for f in gw.fakes.values()) == 1
