"""Backends under hostile or broken conditions, with fake backends in-process: a poison
request that makes an engine fail, a stream that stalls part-way, the access point's view
of health gone wrong (every backend looks down)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from harness.polling import apoll
from tests.conftest import Gateway, GatewayFactory, federation_dict, make_config
from tests.gateway.test_failover import resumable_config
from tests.gateway.test_proxy import sse_events, usage_rows
from verbund.config import FederationConfig, parse_config

POISON = "\u2620 poison"


async def settled(gw: Gateway) -> None:
    """Every confirming probe the failures started has reported."""
    prober = gw.services.health.prober
    await apoll(
        lambda: all(t.done() for t in prober._confirming.values()), "confirming probes", 5.0
    )


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


# -- a poison request does not eject a healthy backend ---------------------------------


async def test_the_same_poison_request_nine_times_does_not_eject(gw: Gateway) -> None:
    west = gw.fakes["west-1"]
    west.poison, west.status = POISON, 500  # that prompt makes the engine fail
    for _ in range(9):
        resp = await gw.chat(**chat_body(POISON))
        assert resp.status_code == 502  # a 500 is not retried elsewhere
        await settled(gw)
    backend = gw.services.federation.backends["west-1"]
    assert backend.ejections == 0 and backend.healthy
    assert len(west.calls) == 9
    resp = await gw.chat()
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] == "west"


async def test_distinct_poison_requests_are_forgiven_when_the_probe_passes(
    gw: Gateway,
) -> None:
    """Different prompts failing in a row still eject only if a health probe agrees."""
    west = gw.fakes["west-1"]
    west.poison, west.status = POISON, 500
    for i in range(9):
        await gw.chat(**chat_body(f"{POISON} {i}"))
        await settled(gw)
    backend = gw.services.federation.backends["west-1"]
    assert backend.ejections == 0 and backend.healthy
    assert west.probes >= 1  # the verdict came from a probe
    assert (await gw.chat()).headers["x-verbund-site"] == "west"


async def test_a_backend_failing_everything_and_its_probe_is_ejected(gw: Gateway) -> None:
    west = gw.fakes["west-1"]
    west.mode, west.status, west.probe_status = "status", 500, 500
    for i in range(3):
        await gw.chat(**chat_body(f"Frage {i}"))
        await settled(gw)
    backend = gw.services.federation.backends["west-1"]
    assert backend.ejections == 1
    calls = len(west.calls)
    assert (await gw.chat()).status_code == 200
    assert len(west.calls) == calls  # out of rotation


# -- a stream that stalls part-way -------------------------------------------------------


def stall_config(tmp_path: Path, resumable: bool) -> FederationConfig:
    base = resumable_config(tmp_path) if resumable else make_config(tmp_path)
    data = base.model_dump(mode="json")
    # the socket's read timeout stays long: only the stall watch can end the wait
    data["routing"].update(read_timeout=120, stream_stall_floor=0.3, stream_stall_factor=10)
    return parse_config(data)


async def stream_within(gw: Gateway, seconds: float) -> Any:
    """A streamed chat that must end within generous ``seconds`` (it hung for 120 s)."""
    return await asyncio.wait_for(gw.chat(stream=True, max_tokens=10), seconds)


async def test_a_stalled_stream_ends_with_an_error_event_and_counts_as_a_failure(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(stall_config(tmp_path, resumable=False)) as gw:
        west = gw.fakes["west-1"]
        west.mode, west.hang_seconds = "stall_stream", 60.0  # t0, t1, then silence
        resp = await stream_within(gw, 10.0)
        events = sse_events(resp.text)
        assert events[-1] != "[DONE]"
        error = json.loads(events[-1])["error"]
        assert error["code"] == "stream_interrupted" and "sent nothing" in error["message"]
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
        )
        assert text == "t0 t1 "
        backend = gw.services.federation.backends["west-1"]
        assert backend.failures == 1 and backend.last_error == "timeout"
        assert backend.outstanding == 0  # the claim was released
        rows = await usage_rows(gw)
        assert [r.status for r in rows] == ["incomplete"]


async def test_a_stalled_stream_resumes_where_resume_is_declared(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(stall_config(tmp_path, resumable=True)) as gw:
        gw.fakes["west-1"].mode, gw.fakes["west-1"].hang_seconds = "stall_stream", 60.0
        resp = await stream_within(gw, 10.0)
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not any("error" in c for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "t0 t1 t2 t3 t4 "
        assert gw.services.federation.backends["west-1"].failures == 1
        assert all(b.outstanding == 0 for b in gw.services.federation.backends.values())
        assert [r.status for r in await usage_rows(gw)] == ["ok"]


async def test_keepalive_comments_before_the_first_token_are_not_a_stall(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """A server reading a long prompt sends only keep-alive comments, further apart than
    the gap allowed between tokens: the stream waits for its first event all the same."""
    async with gateway_factory(stall_config(tmp_path, resumable=False)) as gw:
        west = gw.fakes["west-1"]
        west.mode, west.hang_seconds = "keepalive_first", 0.6  # twice the stall floor
        resp = await stream_within(gw, 10.0)
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
        )
        assert text == "t0 t1 t2 t3 t4 "
        assert gw.services.federation.backends["west-1"].failures == 0


async def test_the_stall_bound_follows_the_observed_time_per_token(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """A backend known to be slow per token gets a longer bound than the floor."""
    async with gateway_factory(stall_config(tmp_path, resumable=False)) as gw:
        from verbund.proxy._watch import stream_stall_bound

        routing = gw.services.config.routing
        backend = gw.services.federation.backends["west-1"]
        assert stream_stall_bound(backend, routing) == 0.3  # nothing observed: the floor
        assert (await gw.chat(stream=True)).status_code == 200
        assert backend.latency.tpot is not None  # streams teach it the time per token
        backend.latency.tpot = 0.5
        assert stream_stall_bound(backend, routing) == 5.0  # 10 x 0.5 s
        backend.latency.tpot = 60.0
        assert stream_stall_bound(backend, routing) == 120  # never beyond read_timeout


# -- the access point's view of health gone wrong ---------------------------------------


async def test_every_backend_looking_down_still_serves_in_panic(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = parse_config(federation_dict(tmp_path))
    async with gateway_factory(cfg) as gw:
        tracker = gw.services.health.tracker
        from verbund.federation import Probe

        backends = list(gw.services.federation.backends.values())
        for b in backends:  # probes time out everywhere (the access point was starved)
            for _ in range(3):
                tracker.on_probe(b, Probe.failed, now=time.monotonic(), confirming=True)
        down = [b.name for b in backends if not b.healthy]
        assert len(down) == 1, "the ejection cap holds probe-driven down too"
        for b in backends:  # even if all were down (the cap set to 100 %): panic
            b.healthy = False
        resp = await gw.chat()
        assert resp.status_code == 200
