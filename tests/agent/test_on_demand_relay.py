"""On-demand models at a site whose ingress is its agent (``ingress = "agent"``): a request
for a stopped model starts it and is served through the relay (streams get keep-alive
comments while it starts), a start that takes too long is 503 ``model_starting`` with
``Retry-After``, and a request whose instance was lost before it got a byte waits for the
replacement instead of failing. In-process access point and agent, a fake launcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Message

from harness.polling import apoll
from tests.agent.conftest import SITE, Linked, LinkedFactory
from tests.agent.test_on_demand import FakeLauncher

OD = "od"
SITE_EXTRA: dict[str, Any] = {
    "models": [
        {"name": "smol", "kind": "chat", "license": "Apache-2.0"},
        {"name": OD, "kind": "chat", "license": "Apache-2.0"},
    ],
    "on_demand": [{"model": OD, "launcher": "slurm", "idle_timeout": 60}],
}


@pytest.fixture
async def linked(
    linked_factory: LinkedFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Linked, FakeLauncher]]:
    async with linked_factory(
        ingress="agent", site_extra=SITE_EXTRA, routing={"keepalive_seconds": 0.05}
    ) as linked:
        od = linked.agent.services.on_demand
        launcher = FakeLauncher()
        od.models[OD].launcher = launcher

        async def healthy(i: object) -> bool:
            return True

        monkeypatch.setattr(od, "_healthy", healthy)
        await linked.refresh()
        assert linked.gw.services.federation.sites[SITE].on_demand[OD].status == "stopped"
        yield linked, launcher


async def _start_when_asked(linked: Linked, launcher: FakeLauncher) -> str:
    """The agent's side of a start: the access point's report of a waiting request, the
    job submitted and running, the engine healthy, the catalogue taken up. Answers the
    new instance's backend name."""
    od = linked.agent.services.on_demand
    await apoll(lambda: any(r[1] for r in od.models[OD].reports.values()), "a waiting request", 10)
    before = set(launcher.jobs)
    await od.tick()
    (job,) = set(launcher.jobs) - before
    launcher.jobs[job] = "running"
    await od.tick()
    (inst,) = [i for i in od.ready() if i.handle == job]
    await linked.refresh()
    od.models[OD].reports.clear()  # the next start waits for a new report
    return inst.backend


async def _chat(linked: Linked, **body: Any) -> Any:
    return await linked.gw.chat(model=OD, **body)


async def test_a_stopped_model_starts_and_is_served_through_the_relay(
    linked: tuple[Linked, FakeLauncher],
) -> None:
    link, launcher = linked
    request = asyncio.create_task(_chat(link))
    backend = await _start_when_asked(link, launcher)
    r = await request
    assert r.status_code == 200, r.text
    assert r.headers["x-verbund-site"] == SITE
    at_ap = link.gw.services.federation.backends[backend]
    assert at_ap.url == f"http://agent/relay/{backend}"  # through the agent, not to the node
    assert link.fakes["west-od"].calls[-1]["path"] == "/v1/chat/completions"
    assert "authorization" not in link.fakes["west-od"].calls[-1]["headers"]


async def test_a_stream_gets_keep_alives_then_the_answer_through_the_relay(
    linked: tuple[Linked, FakeLauncher],
) -> None:
    link, launcher = linked
    raw = json.dumps(
        {"model": OD, "messages": [{"role": "user", "content": "Hallo"}], "stream": True}
    ).encode()
    request = [{"type": "http.request", "body": raw, "more_body": False}]
    got: list[bytes] = []
    kept_alive = asyncio.Event()

    async def receive() -> Message:
        if request:
            return request.pop()
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            got.append(message.get("body", b""))
            if b": keep-alive" in got[-1]:
                kept_alive.set()

    scope = link.gw.asgi_scope("/v1/chat/completions", raw)
    stream = asyncio.ensure_future(link.gw.app(scope, receive, send))
    await asyncio.wait_for(kept_alive.wait(), 10)  # while its model is stopped
    await _start_when_asked(link, launcher)
    await asyncio.wait_for(stream, 10)
    lines = [line for line in b"".join(got).decode().splitlines() if line]
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"
    first = next(i for i, line in enumerate(lines) if line.startswith("data: {"))
    assert all(line == ": keep-alive" for line in lines[:first])
    assert link.fakes["west-od"].calls[-1]["body"]["stream"] is True


async def test_a_start_that_takes_too_long_is_503_model_starting(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(
        ingress="agent", site_extra=SITE_EXTRA, routing={"cold_start_wait": 0.2}
    ) as link:
        link.agent.services.on_demand.models[OD].launcher = FakeLauncher()
        await link.refresh()
        r = await _chat(link)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "model_starting"
        assert int(r.headers["retry-after"]) >= 1
        assert link.fakes["west-od"].calls == []


async def test_a_request_whose_instance_was_lost_waits_for_the_replacement(
    linked: tuple[Linked, FakeLauncher],
) -> None:
    link, launcher = linked
    od = link.agent.services.on_demand
    request = asyncio.create_task(_chat(link))
    first = await _start_when_asked(link, launcher)
    assert (await request).status_code == 200
    # the job is cancelled; the access point has not heard yet (its catalogue still has it)
    (job,) = launcher.jobs
    launcher.jobs[job] = "gone"
    await od.tick()
    assert od.relayed(first) is None
    assert first in link.gw.services.federation.backends
    calls = len(link.fakes["west-od"].calls)
    at_ap = link.gw.services.federation.backends[first]
    request = asyncio.create_task(_chat(link))
    await apoll(lambda: at_ap.consecutive_failures, "the request to fail there", 10)
    await link.refresh()  # the site says it is gone: the request waits for another
    second = await _start_when_asked(link, launcher)
    r = await request
    assert r.status_code == 200, r.text  # not 502: it waited for the replacement
    assert second != first and first not in link.gw.services.federation.backends
    assert len(link.fakes["west-od"].calls) == calls + 1  # sent once, to the new instance


async def test_an_instance_that_answers_with_an_error_is_not_waited_for(
    linked: tuple[Linked, FakeLauncher],
) -> None:
    """Only a lost instance is waited for: one that answers, if with an error, is not
    lost, and its error stands at once (no second start, nothing waiting)."""
    link, launcher = linked
    request = asyncio.create_task(_chat(link))
    await _start_when_asked(link, launcher)
    assert (await request).status_code == 200
    link.fakes["west-od"].mode, link.fakes["west-od"].status = "status", 503
    r = await _chat(link)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert list(launcher.jobs) == ["100"] and link.gw.services.cold_start.waiting == {}


async def test_an_instance_its_site_still_lists_is_not_taken_for_lost(
    linked: tuple[Linked, FakeLauncher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreachable from the agent, but its job runs: the site does not say it is gone,
    so the request's error stands after the grace (nothing started, nothing waiting)."""
    from verbund.gateway import _inference

    monkeypatch.setattr(_inference, "LOSS_GRACE", 0.2)
    link, launcher = linked
    request = asyncio.create_task(_chat(link))
    await _start_when_asked(link, launcher)
    assert (await request).status_code == 200
    link.fakes["west-od"].mode = "refuse"
    r = await _chat(link)
    assert r.status_code == 502
    assert list(launcher.jobs) == ["100"] and link.gw.services.cold_start.waiting == {}


async def test_node_time_reaches_the_access_points_usage_report(
    linked: tuple[Linked, FakeLauncher],
) -> None:
    """The node time an instance held (idle included) is collected from the agent, stored
    per site, model and hour (the same numbers however often it is collected) and shown
    next to the token usage in /admin/usage."""
    from verbund.federation import NodeTimeCollector

    link, launcher = linked
    request = asyncio.create_task(_chat(link))
    await _start_when_asked(link, launcher)
    assert (await request).status_code == 200
    (inst,) = link.agent.services.on_demand.ready()
    inst.running_at = (inst.running_at or 0.0) - 120.0  # it has held its node for 2 minutes
    svc = link.gw.services
    collector = NodeTimeCollector(svc.federation, svc.agents, svc.store)
    assert await collector.collect_once() >= 1
    await collector.collect_once()  # again: stored, not added
    r = await link.gw.client.get("/admin/usage", headers=link.gw.admin())
    assert r.status_code == 200
    body = r.json()
    (row,) = body["node_time"]
    assert (row["site"], row["model"]) == (SITE, OD)
    assert row["cpu_seconds"] == pytest.approx(120.0, abs=5)  # 1 CPU for 2 minutes
    assert row["gpu_seconds"] == 0.0
    assert any(d["institution"] == "uni-a" for d in body["data"])  # tokens beside it
    # an institution's own report has no sites' cost in it
    scoped = await link.gw.client.get(
        "/admin/usage", params={"institution": "uni-a"}, headers=link.gw.admin()
    )
    assert "node_time" not in scoped.json()
