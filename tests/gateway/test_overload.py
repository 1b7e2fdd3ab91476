"""Load shedding: refusals are quick, shaped like OpenAI errors, and never reach a backend."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.types import Message

from tests.conftest import GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from verbund.admission import Overload
from verbund.config import parse_config
from verbund.errors import Overloaded


def _config(tmp_path: Path, **gateway: object):  # type: ignore[no-untyped-def]
    data = federation_dict(tmp_path)
    data["gateway"].update(gateway)
    return parse_config(data)


async def test_over_the_bound_the_tenant_over_its_share_is_shed(
    tmp_path: Path, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """uni-a holds every slot with slow requests: its next request is refused at once,
    uni-b's is still served; the refusal is logged with its reason."""
    cfg = _config(tmp_path, max_in_flight=2)
    fakes = {
        b.name: FakeBackend(b.name, mode="hang", hang_seconds=1.0)
        for s in cfg.sites
        for b in s.backends
    }
    async with gateway_factory(cfg, fakes) as gw:
        held = [asyncio.ensure_future(gw.chat()) for _ in range(2)]
        ov = gw.services.overload
        await _until(lambda: ov.in_flight == 2)
        calls = gw.upstream_calls()
        with caplog.at_level(logging.WARNING, "verbund.overload"):
            r = await gw.chat()
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-request-id"]
        err = r.json()["error"]
        assert err["code"] == "overloaded" and err["type"] == "server_error"
        assert "2 requests in flight" in err["message"]
        assert gw.upstream_calls() == calls  # refused before any backend was called
        assert "uni-a holds 2, an equal share is 2" in caplog.text
        other = asyncio.ensure_future(gw.chat("uni-b"))  # within its share: admitted
        await _until(lambda: ov.by_tenant.get("uni-b") == 1)
        # operators still see the access point
        assert (await gw.client.get("/healthz")).status_code == 200
        metrics = (await gw.client.get("/metrics")).text
        assert "verbund_shed_total 1.0" in metrics
        assert "verbund_process_in_flight 3.0" in metrics
        await asyncio.gather(*held, other)
        assert ov.in_flight == 0 and ov.by_tenant == {}
        for f in fakes.values():
            f.mode = "ok"
        assert (await gw.chat()).status_code == 200  # admitted again


def test_fair_shares() -> None:
    ov = Overload(max_in_flight=4, max_lag=0)
    claims = [ov.claim("a") for _ in range(3)] + [ov.claim("b")]
    with pytest.raises(Overloaded):
        ov.claim("a")  # 3 of 4, an equal share is 2
    b = ov.claim("b")  # 1 of 4, under its equal share: admitted past the bound
    with pytest.raises(Overloaded):
        ov.claim("c")  # 5 in flight, 1.25 x 4: now everybody is shed, newcomers too
    for claim in [*claims, b]:
        claim.release()
        claim.release()  # once only
    assert ov.in_flight == 0 and ov.by_tenant == {}


async def test_a_stream_holds_its_place_until_its_last_byte(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    """A stream is in flight from its first byte to its last, not just until headers."""
    cfg = _config(tmp_path, max_in_flight=1)
    async with gateway_factory(cfg) as gw:
        ov = gw.services.overload
        messages = [{"role": "user", "content": "Hallo"}]
        raw = json.dumps({"model": "smol", "messages": messages, "stream": True}).encode()
        body = [{"type": "http.request", "body": raw, "more_body": False}]
        reading = asyncio.Event()
        first_bytes = asyncio.Event()

        async def receive() -> Message:
            if body:
                return body.pop()
            await asyncio.Event().wait()  # the client stays
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first_bytes.set()
                await reading.wait()  # a reader that has not taken the bytes yet

        stream = asyncio.ensure_future(
            gw.app(gw.asgi_scope("/v1/chat/completions", raw), receive, send)
        )
        await asyncio.wait_for(first_bytes.wait(), 5)
        assert ov.in_flight == 1
        assert (await gw.chat()).status_code == 503
        reading.set()
        await asyncio.wait_for(stream, 5)
        assert ov.in_flight == 0


async def test_lag_is_measured_and_sheds_until_the_loop_catches_up() -> None:
    ov = Overload(max_in_flight=0, max_lag=0.05)
    watcher = asyncio.ensure_future(ov.watch())
    try:
        await asyncio.sleep(0.12)
        assert ov.refusal() is None
        ov.claim("a").release()
        time.sleep(0.4)
        await asyncio.sleep(0.01)
        assert ov.lag > 0.2
        refusal = ov.refusal()  # far behind: even before the caller is known
        assert refusal is not None and refusal.status == 503
        with pytest.raises(Overloaded):
            ov.claim("a")
        await asyncio.sleep(0.15)  # a few ticks on time again
        assert ov.lag < 0.05 and ov.refusal() is None
        ov.claim("a").release()
    finally:
        watcher.cancel()


async def _until(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_zero_disables_both_bounds() -> None:
    ov = Overload(max_in_flight=0, max_lag=0)
    ov.in_flight, ov.lag = 10**6, 60.0
    assert ov.refusal() is None
    ov.claim("a").release()


def test_shedding_says_why_in_the_log_once_in_a_while(caplog: pytest.LogCaptureFixture) -> None:
    ov = Overload(max_in_flight=2, max_lag=0.1)
    held = [ov.claim("a"), ov.claim("a")]
    with caplog.at_level(logging.WARNING, logger="verbund.overload"):
        for _ in range(50):
            with pytest.raises(Overloaded):
                ov.claim("a")
    lines = [r.getMessage() for r in caplog.records if r.name == "verbund.overload"]
    assert len(lines) == 1  # rate-limited
    assert "2 requests in flight (bound 2)" in lines[0] and "a holds 2" in lines[0]
    assert ov.shed_total == 50
    for claim in held:
        claim.release()
    caplog.clear()
    lagging = Overload(max_in_flight=0, max_lag=0.1)
    lagging.lag = 0.5
    with caplog.at_level(logging.WARNING, logger="verbund.overload"):
        assert lagging.refusal() is not None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "verbund.overload"]
    assert "event loop 500 ms late" in line
