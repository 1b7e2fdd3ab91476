"""Load shedding: refusals are quick, shaped like OpenAI errors, and never reach a backend."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from verbund.config import parse_config
from verbund.gateway._overload import Overload, OverloadMiddleware


def _config(tmp_path: Path, **gateway: object):  # type: ignore[no-untyped-def]
    data = federation_dict(tmp_path)
    data["gateway"].update(gateway)
    return parse_config(data)


async def test_requests_over_the_in_flight_bound_get_503_at_once(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    cfg = _config(tmp_path, max_in_flight=2)
    fakes = {
        b.name: FakeBackend(b.name, mode="hang", hang_seconds=1.0)
        for s in cfg.sites
        for b in s.backends
    }
    async with gateway_factory(cfg, fakes) as gw:
        held = [asyncio.ensure_future(gw.chat()) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert gw.services.overload.in_flight == 2
        calls = gw.upstream_calls()
        r = await gw.chat()
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-request-id"]
        err = r.json()["error"]
        assert err["code"] == "overloaded" and err["type"] == "server_error"
        assert "2 requests in flight" in err["message"]
        assert gw.upstream_calls() == calls  # refused before any backend was called
        # operators still see the access point
        assert (await gw.client.get("/healthz")).status_code == 200
        metrics = (await gw.client.get("/metrics")).text
        assert "verbund_shed_total 1.0" in metrics
        assert "verbund_process_in_flight 2.0" in metrics
        await asyncio.gather(*held)
        assert gw.services.overload.in_flight == 0
        for f in fakes.values():
            f.mode = "ok"
        assert (await gw.chat()).status_code == 200  # admitted again


async def test_open_streams_count_until_they_end() -> None:
    """A stream is in flight from its first byte to its last, not just until headers."""
    ov = Overload(max_in_flight=1, max_lag=0)
    more = asyncio.Event()

    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await more.wait()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    app = OverloadMiddleware(streaming_app, ov)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/chat/completions"}
    stream = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.05)
    assert ov.in_flight == 1 and len(sent) == 2
    second: list[Message] = []

    async def send_second(message: Message) -> None:
        second.append(message)

    await app(scope, receive, send_second)
    assert second[0]["status"] == 503
    more.set()
    await stream
    assert ov.in_flight == 0 and ov.shed_total == 1


async def test_lag_is_measured_and_sheds_until_the_loop_catches_up() -> None:
    ov = Overload(max_in_flight=0, max_lag=0.2)
    watcher = asyncio.ensure_future(ov.watch())
    try:
        await asyncio.sleep(0.12)
        assert ov.refusal() is None
        time.sleep(0.4)
        await asyncio.sleep(0.01)
        assert ov.lag > 0.2
        refusal = ov.refusal()
        assert refusal is not None and refusal.status == 503
        await asyncio.sleep(0.15)  # a few ticks on time again
        assert ov.lag < 0.2 and ov.refusal() is None
    finally:
        watcher.cancel()


async def test_zero_disables_both_bounds() -> None:
    ov = Overload(max_in_flight=0, max_lag=0)
    ov.in_flight, ov.lag = 10**6, 60.0
    assert ov.refusal() is None


def test_shedding_says_why_in_the_log_once_in_a_while(caplog: pytest.LogCaptureFixture) -> None:
    ov = Overload(max_in_flight=2, max_lag=0.1)
    ov.in_flight = 2
    with caplog.at_level(logging.WARNING, logger="verbund.overload"):
        for _ in range(50):
            assert ov.refusal() is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "verbund.overload"]
    assert len(lines) == 1  # rate-limited
    assert "2 requests in flight" in lines[0] and "gateway.max_in_flight is 2" in lines[0]
    assert ov.shed_total == 50
    caplog.clear()
    lagging = Overload(max_in_flight=0, max_lag=0.1)
    lagging.lag = 0.5
    with caplog.at_level(logging.WARNING, logger="verbund.overload"):
        assert lagging.refusal() is not None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "verbund.overload"]
    assert "0.500s late" in line and "gateway.shed_after_lag is 0.1s" in line
