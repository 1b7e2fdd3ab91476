"""Failover, streaming and usage accounting of the proxy (fake backends, no network)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Gateway, make_config
from verbund.store import UsageRow


async def usage_rows(gw: Gateway) -> list[UsageRow]:
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        return list((await s.execute(select(UsageRow).order_by(UsageRow.ts))).scalars())


@pytest.mark.parametrize("mode", ["refuse", "timeout", "status"])
async def test_failover_to_the_next_site(gw: Gateway, mode: str) -> None:
    gw.fakes["west-1"].mode = mode
    resp = await gw.chat()
    assert resp.status_code == 200
    assert resp.headers["x-verbund-site"] in {"sued", "ost"}
    rows = await usage_rows(gw)
    assert rows[-1].attempts == 2 and rows[-1].status == "ok"


async def test_refused_backend_is_marked_down_and_not_tried_again(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "refuse"
    await gw.chat()
    assert not gw.services.federation.backends["west-1"].healthy
    for _ in range(3):
        assert (await gw.chat()).status_code == 200
    assert len(gw.fakes["west-1"].calls) == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_fail_over(gw: Gateway, status: int) -> None:
    gw.fakes["west-1"].mode = "status"
    gw.fakes["west-1"].status = status
    assert (await gw.chat()).status_code == 200


async def test_client_errors_are_not_retried_and_do_not_eject(gw: Gateway) -> None:
    west = gw.fakes["west-1"]
    west.mode, west.status = "status", 400
    west.error_body = b'{"error": {"message": "context too long; see http://10.1.0.5:8000/docs"}}'
    for _ in range(4):
        resp = await gw.chat()
        assert resp.status_code == 400
    err = resp.json()["error"]
    assert "10.1.0.5" not in err["message"] and "context length" in err["message"]
    assert err["code"] == "upstream_rejected"
    backend = gw.services.federation.backends["west-1"]
    assert backend.healthy and backend.ejections == 0
    assert gw.upstream_calls() == 4


async def test_backend_error_bodies_and_addresses_never_reach_the_client(gw: Gateway) -> None:
    for f in gw.fakes.values():
        f.mode, f.status = "status", 500
    resp = await gw.chat()
    assert resp.status_code == 502
    assert "10.0.0.5" not in resp.text and "overloaded" not in resp.text
    assert ".invalid" not in resp.text


async def test_all_down_is_503_with_reasons(gw: Gateway) -> None:
    for f in gw.fakes.values():
        f.mode = "refuse"
    resp = await gw.chat()
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_backend_available"
    again = await gw.chat()  # now all are marked down: fail fast, no upstream call
    calls = gw.upstream_calls()
    assert again.status_code == 503 and "no healthy backend" in again.json()["error"]["message"]
    assert gw.upstream_calls() == calls


async def test_repeated_timeouts_eject(gw: Gateway) -> None:
    """Timeouts of distinct requests eject (one request timing out twice counts once)."""
    gw.fakes["west-1"].mode = "timeout"
    for i in range(2):
        await gw.chat(messages=[{"role": "user", "content": f"Frage {i}"}])
    backend = gw.services.federation.backends["west-1"]
    assert backend.ejections == 1
    before = len(gw.fakes["west-1"].calls)
    await gw.chat()
    assert len(gw.fakes["west-1"].calls) == before


async def test_attempts_are_bounded(gateway_factory: Any, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, routing={"max_attempts": 2})
    async with gateway_factory(cfg) as gw:
        for f in gw.fakes.values():
            f.mode, f.status = "status", 503
        resp = await gw.chat()
        assert resp.status_code == 502
        assert gw.upstream_calls() == 2


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def test_stream_is_forwarded_and_usage_recorded_without_showing_it(gw: Gateway) -> None:
    resp = await gw.chat(stream=True)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == (
        "t0 t1 t2 t3 t4 "
    )
    sent = gw.fakes["west-1"].calls[0]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    row = (await usage_rows(gw))[-1]
    assert (row.prompt_tokens, row.completion_tokens, row.stream, row.status) == (9, 5, True, "ok")
    assert not row.usage_estimated


async def test_stream_usage_chunk_is_kept_when_the_client_asks(gw: Gateway) -> None:
    resp = await gw.chat(stream=True, stream_options={"include_usage": True})
    events = [json.loads(e) for e in sse_events(resp.text)[:-1]]
    assert events[-1]["usage"]["completion_tokens"] == 5


async def test_stream_without_backend_usage_is_counted_and_flagged(gw: Gateway) -> None:
    gw.fakes["west-1"].usage_in_stream = False
    await gw.chat(stream=True)
    row = (await usage_rows(gw))[-1]
    assert row.completion_tokens == 5 and row.prompt_tokens > 0 and row.usage_estimated


async def test_stream_failing_before_first_byte_fails_over(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "hang_first_byte"
    resp = await gw.chat(stream=True)
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] != "west"
    assert sse_events(resp.text)[-1] == "[DONE]"


async def test_stream_broken_after_first_byte_ends_with_error_and_no_done(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "break_stream"
    resp = await gw.chat(stream=True)
    events = sse_events(resp.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    row = (await usage_rows(gw))[-1]
    assert row.status == "incomplete"
    assert gw.services.federation.backends["west-1"].outstanding == 0


async def test_outstanding_returns_to_zero(gw: Gateway) -> None:
    gw.fakes["west-1"].mode = "refuse"
    await gw.chat()
    await gw.chat(stream=True)
    gw.fakes["sued-1"].mode, gw.fakes["sued-1"].status = "status", 400
    await gw.chat()
    assert all(b.outstanding == 0 for b in gw.services.federation.backends.values())


async def test_usage_record_has_no_content_and_no_key(gw: Gateway) -> None:
    canary = "CANARY-7f3a9"
    await gw.chat(messages=[{"role": "user", "content": canary}])
    await gw.chat(stream=True, messages=[{"role": "user", "content": canary}])
    rows = await usage_rows(gw)
    dumped = repr([r.__dict__ for r in rows])
    assert canary not in dumped and gw.keys["uni-a"] not in dumped
    assert "Hallo aus dem Rechenzentrum" not in dumped
    assert {r.key_id for r in rows} == {rows[0].key_id} and rows[0].key_id.startswith("key_")


async def test_waiting_for_a_busy_pool_is_not_held_against_the_backend(gw: Gateway) -> None:
    """A time-out while this access point had more requests out to a backend than it has
    connections there is queueing on our side: the request moves on, the backend keeps
    its health. The same time-out with a free connection counts as the backend's."""
    proxy = gw.services.proxy
    west = gw.services.federation.backends["west-1"]
    limit = gw.services.health.pool.limit(west)
    west.outstanding = limit + 1
    retry = proxy.attempts.transport_failure(west, TimeoutError())
    assert retry.error.code == "no_backend_available"
    assert west.failures == 0 and west.healthy
    west.outstanding = 1
    retry = proxy.attempts.transport_failure(west, TimeoutError())
    assert retry.error.code == "upstream_timeout"
    assert west.failures == 1
    west.outstanding = 0


async def test_a_client_that_leaves_cancels_its_upstream_call(gw: Gateway) -> None:
    """The client disconnects while its answer is still being computed: the upstream call
    is cancelled at once (the backend may stop generating), the usage record says
    "cancelled", and the backend is not blamed."""
    for fake in gw.fakes.values():
        fake.mode, fake.hang_seconds = "hang", 30.0
    body = json.dumps({"model": "smol", "messages": [{"role": "user", "content": "Hallo"}]})
    leave = asyncio.Event()
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": body.encode(), "more_body": False}]

    async def receive() -> Any:
        if messages:
            return messages.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = gw.asgi_scope("/v1/chat/completions", body.encode())
    call = asyncio.ensure_future(gw.app(scope, receive, send))
    await asyncio.sleep(0.6)
    assert not call.done()
    began = time.monotonic()
    leave.set()
    await asyncio.wait_for(call, 2.0)
    assert time.monotonic() - began < 1.0  # not the 30 s hang, nor the try's deadline
    rows = await usage_rows(gw)
    assert (rows[-1].status, rows[-1].http_status) == ("cancelled", 499)
    backend = gw.services.federation.backends[rows[-1].backend]
    assert backend.outstanding == 0 and backend.healthy and backend.failures == 0
    assert gw.upstream_calls() == 1  # not retried elsewhere
