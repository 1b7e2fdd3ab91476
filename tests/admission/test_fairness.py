"""One tenant's slow or numerous requests cannot take what another tenant needs: seats per
key and institution, requests per minute before the body, streams that end when their
reader stalls, and a bounded number of unknown-key lookups. (Bodies that arrive too
slowly are cut off below the app, by the server: ``tests/test_server_limits.py``.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.types import Message

from tests.conftest import Gateway, GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from verbund.config import FederationConfig, parse_config
from verbund.store import UsageRow

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hallo"}]}


def config(tmp_path: Path, limits: dict[str, Any], **uni_a: Any) -> FederationConfig:
    data = federation_dict(tmp_path, limits=limits)
    data["institutions"][0].update(uni_a)
    return parse_config(data)


def hanging(cfg: FederationConfig, seconds: float = 1.0) -> dict[str, FakeBackend]:
    return {
        b.name: FakeBackend(b.name, mode="hang", hang_seconds=seconds)
        for s in cfg.sites
        for b in s.backends
    }


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def rows(gw: Gateway) -> list[UsageRow]:
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        return list((await s.execute(select(UsageRow).order_by(UsageRow.ts))).scalars())


async def test_an_institution_at_its_seat_limit_is_refused_and_others_are_not(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    cfg = config(tmp_path, {"max_concurrent_per_key": 0}, max_concurrent_requests=2)
    async with gateway_factory(cfg, hanging(cfg)) as gw:
        seats = gw.services.coordination.seats
        held = [asyncio.ensure_future(gw.chat()) for _ in range(2)]
        await until(lambda: seats.counts.get("institution:uni-a") == 2)  # type: ignore[attr-defined]
        calls = gw.upstream_calls()
        refused = await gw.chat()
        assert refused.status_code == 429
        err = refused.json()["error"]
        assert err["code"] == "concurrency_limit_exceeded"
        assert "institution uni-a may have 2 requests in progress" in err["message"]
        assert gw.upstream_calls() == calls
        other = asyncio.ensure_future(gw.chat("uni-b"))
        await until(lambda: seats.counts.get("institution:uni-b") == 1)  # type: ignore[attr-defined]
        await asyncio.gather(*held, other)  # the stalled backends time them out
        assert seats.counts == {}  # type: ignore[attr-defined]
        for fake in gw.fakes.values():
            fake.mode = "ok"
        assert (await gw.chat()).status_code == 200  # the seats are free again
        statuses = [(r.status, r.http_status) for r in await rows(gw)]
        assert statuses.count(("rejected", 429)) == 1 and statuses[-1] == ("ok", 200)


async def test_a_key_at_its_seat_limit_is_refused(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    cfg = config(tmp_path, {"max_concurrent_per_key": 1})
    async with gateway_factory(cfg, hanging(cfg)) as gw:
        held = asyncio.ensure_future(gw.chat())
        await until(lambda: gw.services.overload.in_flight == 1)
        refused = await gw.chat()
        assert refused.status_code == 429
        assert "key key_" in refused.json()["error"]["message"]
        await held


async def test_requests_per_minute_are_charged_before_the_body_is_read(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    """A client over its request quota is refused while its body is still on the way."""
    cfg = config(tmp_path, {}, requests_per_minute=1)
    async with gateway_factory(cfg) as gw:
        assert (await gw.chat()).status_code == 200
        sent: list[Message] = []

        async def never_sends_its_body() -> Message:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        raw = json.dumps(CHAT).encode()
        scope = gw.asgi_scope("/v1/chat/completions", raw)
        await asyncio.wait_for(gw.app(scope, never_sends_its_body, send), 2.0)
        assert sent[0]["status"] == 429
        assert b"requests per minute" in sent[1]["body"]


async def test_a_stream_whose_reader_stalls_is_ended(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    cfg = config(tmp_path, {"stream_write_timeout": 0.3})
    async with gateway_factory(cfg) as gw:
        raw = json.dumps({**CHAT, "stream": True}).encode()
        body = [{"type": "http.request", "body": raw, "more_body": False}]
        took: list[Message] = []

        async def receive() -> Message:
            if body:
                return body.pop()
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and len(took) >= 2:
                await asyncio.Event().wait()  # the reader takes nothing more, for ever
            took.append(message)

        began = time.monotonic()
        await asyncio.wait_for(gw.app(gw.asgi_scope("/v1/chat/completions", raw), receive, send), 5)
        assert time.monotonic() - began < 4
        assert gw.services.overload.in_flight == 0
        assert all(b.outstanding == 0 for b in gw.services.federation.backends.values())
        assert [(r.status, r.stream) for r in await rows(gw)] == [("incomplete", True)]


async def test_unknown_keys_cannot_take_the_store(gateway_factory: GatewayFactory) -> None:
    """Random keys each need a store lookup: beyond a bound at once they are refused."""
    async with gateway_factory() as gw:
        keys = gw.services.keys
        keys.MAX_LOOKUPS = 2
        gate = asyncio.Event()
        real_session = gw.services.store.session

        def slow_session() -> Any:
            class Slow:
                async def __aenter__(self) -> Any:
                    await gate.wait()
                    self.inner = real_session()
                    return await self.inner.__aenter__()

                async def __aexit__(self, *exc: object) -> None:
                    await self.inner.__aexit__(*exc)

            return Slow()

        gw.services.store.session = slow_session  # type: ignore[method-assign]
        lookups = [asyncio.ensure_future(keys.resolve(f"vb-random-{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        resp = await asyncio.wait_for(
            gw.client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer vb-random-x"}
            ),
            5,
        )
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "overloaded"
        gate.set()
        assert await asyncio.gather(*lookups) == [None, None]
        gw.services.store.session = real_session  # type: ignore[method-assign]
        assert (await gw.chat()).status_code == 200


@pytest.mark.parametrize("field", ["max_concurrent_per_key", "stream_write_timeout"])
def test_limits_refuse_negative_values(tmp_path: Path, field: str) -> None:
    from verbund.errors import ConfigError

    with pytest.raises(ConfigError, match=f"limits.{field}"):
        config(tmp_path, {field: -1})
