"""Every request's claim on a backend ends with the request, whatever became of it: after
each outcome no backend counts a request in flight, and the usage record was emitted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gateway, GatewayFactory, make_config
from tests.gateway.test_failover import resumable_config
from tests.gateway.test_proxy import usage_rows
from verbund.config import BackendConfig, SiteConfig, SiteState
from verbund.federation import Backend, Site


def in_flight(gw: Gateway) -> dict[str, int]:
    return {b.name: b.outstanding for b in gw.services.federation.backends.values()}


def asgi_call(
    gw: Gateway, body: dict[str, Any], *, leave_after: float | None, fail_send: bool
) -> Awaitable[None]:
    """The app called as a server would: the client leaves after ``leave_after`` seconds,
    or (``fail_send``) its connection breaks when the first body bytes are sent."""
    raw = json.dumps(body).encode()
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    leave = asyncio.Event()

    async def receive() -> Any:
        if messages:
            return messages.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        if fail_send and message["type"] == "http.response.body" and message.get("body"):
            raise OSError("connection reset by peer")

    scope = gw.asgi_scope("/v1/chat/completions", raw)

    async def run() -> None:
        call = asyncio.ensure_future(gw.app(scope, receive, send))
        if leave_after is not None:
            await asyncio.sleep(leave_after)
            leave.set()
        with pytest.raises(OSError) if fail_send else _nothing():
            await asyncio.wait_for(call, 5.0)

    return run()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hallo"}]}


async def answered(gw: Gateway) -> None:
    assert (await gw.chat()).status_code == 200


async def answered_stream(gw: Gateway) -> None:
    assert (await gw.chat(stream=True)).status_code == 200


async def upstream_error(gw: Gateway) -> None:
    for fake in gw.fakes.values():
        fake.mode, fake.status = "status", 500
    assert (await gw.chat()).status_code == 502


async def upstream_error_stream(gw: Gateway) -> None:
    for fake in gw.fakes.values():
        fake.mode, fake.status = "status", 503
    assert (await gw.chat(stream=True)).status_code == 502


async def refused(gw: Gateway) -> None:
    for fake in gw.fakes.values():
        fake.mode = "refuse"
    assert (await gw.chat()).status_code == 503


async def timeout(gw: Gateway) -> None:
    for fake in gw.fakes.values():
        fake.mode = "timeout"
    assert (await gw.chat()).status_code == 504


async def client_gone_waiting(gw: Gateway) -> None:
    for fake in gw.fakes.values():
        fake.mode, fake.hang_seconds = "hang", 30.0
    await asgi_call(gw, CHAT, leave_after=0.6, fail_send=False)


async def client_gone_mid_stream(gw: Gateway) -> None:
    await asgi_call(gw, {**CHAT, "stream": True}, leave_after=None, fail_send=True)


async def broken_stream(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "break_stream"
    resp = await gw.chat(stream=True)
    assert "stream_interrupted" in resp.text


async def resumed_stream(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "break_stream"
    resp = await gw.chat(stream=True, max_tokens=10)
    assert resp.text.rstrip().endswith("[DONE]")


OUTCOMES: dict[str, tuple[Callable[[Gateway], Awaitable[None]], str]] = {
    "answered": (answered, "ok"),
    "answered-stream": (answered_stream, "ok"),
    "upstream-error": (upstream_error, "error"),
    "upstream-error-stream": (upstream_error_stream, "error"),
    "refused": (refused, "error"),
    "timeout": (timeout, "error"),
    "client-gone-waiting": (client_gone_waiting, "cancelled"),
    "client-gone-mid-stream": (client_gone_mid_stream, "incomplete"),
    "broken-stream": (broken_stream, "incomplete"),
    "resumed-stream": (resumed_stream, "ok"),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_nothing_stays_in_flight_after(
    gateway_factory: GatewayFactory, tmp_path: Path, outcome: str
) -> None:
    act, status = OUTCOMES[outcome]
    resumable = outcome == "resumed-stream"
    cfg = resumable_config(tmp_path) if resumable else make_config(tmp_path)
    async with gateway_factory(cfg) as gw:
        await act(gw)
        assert set(in_flight(gw).values()) == {0}, in_flight(gw)
        rows = await usage_rows(gw)
        assert [r.status for r in rows] == [status]


def _backend() -> Backend:
    site = Site(SiteConfig(name="s", region="NW", jurisdiction="DE"), SiteState.active)
    return Backend(BackendConfig(name="b", url="http://b.invalid", models=["m"]), site)


@given(st.lists(st.tuples(st.sampled_from(["claim", "hand", "release"]), st.integers(0, 7))))
def test_claims_count_exactly_what_is_held(ops: list[tuple[str, int]]) -> None:
    """Any interleaving of claims, hand-overs and (repeated) releases: the backend counts
    exactly the claims still held, never below zero."""
    backend = _backend()
    claims = []
    for op, i in ops:
        if op == "claim" or not claims:
            claims.append(backend.claim(0.0))
            continue
        k = i % len(claims)
        if op == "hand":
            claims[k] = claims[k].hand_over()
        else:
            claims[k].release()
        assert backend.outstanding == sum(c.held for c in claims) >= 0
    for c in claims:
        with c:
            pass
    assert backend.outstanding == 0
