"""The batch runner and its item queue: leases, take-over, spare capacity, clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.batch.helpers import chat_line, output_lines, start_batch
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from verbund.batch import BatchRunner, ItemStore, Outcome, Signal
from verbund.batch._finalize import part_key
from verbund.config import parse_config
from verbund.gateway import create_app
from verbund.store import BatchItemRow


async def wait_for(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class SlowFake(FakeBackend):
    """Answers after a delay and records how many requests were in flight at once."""

    delay: float = 0.05
    in_flight: int = 0
    peak: int = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self(request)
        finally:
            self.in_flight -= 1


def capacity_config(tmp_path: Path, max_concurrency: int, **batch: Any) -> Any:
    data = federation_dict(tmp_path, batch={"retry_backoff_seconds": 0, **batch})
    for site in data["sites"]:
        for b in site["backends"]:
            b["max_concurrency"] = max_concurrency
    return parse_config(data)


async def items(gw: Gateway) -> list[BatchItemRow]:
    async with gw.services.store.session() as s:
        return list((await s.execute(select(BatchItemRow).order_by(BatchItemRow.id))).scalars())


async def age_leases(gw: Gateway, owner: str, seconds: float) -> None:
    """Let ``seconds`` pass for the leases of ``owner`` (leases go by the store's clock)."""
    async with gw.services.store.session() as s, s.begin():
        await s.execute(
            update(BatchItemRow)
            .where(BatchItemRow.lease_owner == owner)
            .values(lease_until=BatchItemRow.lease_until - seconds)
        )


async def test_claims_are_exclusive_and_leases_pass_on(gw: Gateway) -> None:
    batch = await start_batch(gw, [chat_line(f"i{i}") for i in range(5)])
    a, b = ItemStore(gw.services.store), ItemStore(gw.services.store)
    got_a = await a.claim(batch["id"], 3, "ap-a/1", lease=30)
    got_b = await b.claim(batch["id"], 5, "ap-b/1", lease=30)
    assert len(got_a) == 3 and len(got_b) == 2
    assert not {i.id for i in got_a} & {i.id for i in got_b}
    assert await b.claim(batch["id"], 5, "ap-b/1", lease=30) == []
    # b renews its leases; a's run out: b takes a's items over, and a's late results don't count
    await b.renew("ap-b/1", lease=30)
    await age_leases(gw, "ap-a/1", 31)
    taken = await b.claim(batch["id"], 5, "ap-b/1", lease=30)
    assert sorted(i.id for i in taken) == sorted(i.id for i in got_a)
    assert all(i.attempts == 2 for i in taken)
    late = [Outcome(i, "done", b"x\n") for i in got_a]
    parts = {i.id: ("part-x-a", 0, 2) for i in got_a}
    assert await a.record(late, parts, "ap-a/1") == 0
    assert await b.record([Outcome(taken[0], "retry", next_try_at=0)], {}, "ap-b/1") == 1
    rows = {r.id: r for r in await items(gw)}
    assert rows[taken[0].id].status == "pending" and rows[taken[0].id].lease_owner is None
    assert all(rows[i.id].lease_owner == "ap-b/1" for i in taken[1:])


async def test_an_access_point_whose_clock_runs_ahead_does_not_take_live_leases(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """Two runners on one store; the second's clock is 40 s ahead (more than a lease).
    Items the first runs stay its own: nothing is sent twice, nothing billed twice."""
    cfg = parse_config(federation_dict(tmp_path, batch={"lease_seconds": 30}))
    fakes = {
        b.name: FakeBackend(b.name, mode="hang", hang_seconds=60)
        for s in cfg.sites
        for b in s.backends
    }
    async with gateway_factory(cfg, fakes) as gw:
        await start_batch(gw, [chat_line(f"s{i}") for i in range(4)])
        first = gw.services.batch_runner
        running = asyncio.create_task(first.run())
        try:
            await wait_for(lambda: sum(len(f.calls) for f in fakes.values()) >= 4, within=10)
            ahead = BatchRunner(
                store=gw.services.store,
                files=gw.services.files,
                config=cfg.batch,
                dispatch=first._feeder._backends,
                access_point="ap-ahead",
                clock=lambda: time.time() + 40,
            )
            feeder = ahead._feeder
            found = await ahead._housekeeping.look(ahead._clock())
            await feeder.sync(found.running, found.stops)
            await feeder.feed(ahead._clock())
            assert ahead.dispatched == 0
            assert not any(lane.buffer for lane in feeder.lanes.values())
            rows = await items(gw)
            assert {r.lease_owner for r in rows} == {first.owner}
            assert all(r.attempts == 1 and r.status == "running" for r in rows)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def test_a_dead_runners_items_are_taken_over_exactly_once(gw: Gateway) -> None:
    ids = [f"d{i}" for i in range(8)]
    batch = await start_batch(gw, [chat_line(i) for i in ids])
    store = ItemStore(gw.services.store)
    dead = "ap-dead/0123456789abcdef"
    claimed = await store.claim(batch["id"], 3, dead, lease=30)
    await age_leases(gw, dead, 100)
    # the dead runner had appended a result for one item but died before recording it
    stray = json.dumps({"custom_id": claimed[0].custom_id, "stray": True}).encode() + b"\n"
    await gw.services.files.blobs.append(part_key(batch["id"], "0123456789abcdef"), stray)
    await gw.services.batch_runner.run_until_idle(20)
    done = (await gw.client.get(f"/v1/batches/{batch['id']}", headers=gw.auth())).json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    lines = await output_lines(gw, done["output_file_id"])
    assert sorted(x["custom_id"] for x in lines) == sorted(ids)
    assert not any("stray" in x for x in lines)
    assert not await gw.services.files.blobs.keys("part-")


async def test_batch_items_only_take_capacity_below_the_threshold(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = capacity_config(tmp_path, max_concurrency=4, utilisation_threshold=0.75)
    async with gateway_factory(cfg) as gw:
        runner = gw.services.batch_runner
        west = gw.services.federation.backends["west-1"]
        assert runner.capacity.room(west) == 2  # the limiter's first window
        runner.limiter.acquire("west-1")
        runner.limiter.acquire("west-1")
        runner.limiter.release("west-1", Signal.ok, 1.0)
        runner.limiter.release("west-1", Signal.ok, 1.0)
        assert runner.limiter.limit("west-1") > 2
        assert runner.capacity.room(west) == 3  # 0.75 * 4 = 3 may be busy
        west.outstanding = 2  # interactive requests in flight
        assert runner.capacity.room(west) == 1
        west.outstanding = 3
        assert runner.capacity.room(west) == 0
        # with every backend busy, a batch waits and nothing is sent
        for b in gw.services.federation.backends.values():
            b.outstanding = 3
        batch = await start_batch(gw, [chat_line("w")])
        with pytest.raises(TimeoutError):
            await runner.run_until_idle(0.5)
        assert gw.upstream_calls() == 0
        for b in gw.services.federation.backends.values():
            b.outstanding = 0
        await runner.run_until_idle(10)
        got = (await gw.client.get(f"/v1/batches/{batch['id']}", headers=gw.auth())).json()
        assert got["status"] == "completed"


async def test_concurrency_stays_within_capacity_and_a_stop_gives_items_back(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = capacity_config(tmp_path, max_concurrency=4, utilisation_threshold=1.0)
    fakes = {n: SlowFake(n) for n in ("west-1", "sued-1", "ost-1")}

    def factory(backend: Any) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(fakes[backend.name].handle)

    app = create_app(cfg, admin_key=ADMIN_KEY, transport_factory=factory, background=False)
    svc = app.state.services
    async with app.router.lifespan_context(app):
        key = (await svc.keys.create("uni-a", "t", actor="t")).key
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ap"
        ) as client:
            gw = Gateway(client, svc, dict(fakes), {"uni-a": key}, app)
            ids = [f"s{i}" for i in range(60)]
            batch = await start_batch(gw, [chat_line(i) for i in ids])
            runner = svc.batch_runner
            task = asyncio.create_task(runner.run())
            deadline = time.monotonic() + 20
            while sum(len(f.calls) for f in fakes.values()) < 15:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            rows = await items(gw)
            assert {r.status for r in rows} <= {"pending", "done"}, "a stop left leases behind"
            assert any(r.status == "done" for r in rows) and any(
                r.status == "pending" for r in rows
            )
            await runner.run_until_idle(30)
            done = (await client.get(f"/v1/batches/{batch['id']}", headers=gw.auth())).json()
            assert done["status"] == "completed"
            lines = await output_lines(gw, done["output_file_id"])
            assert sorted(x["custom_id"] for x in lines) == sorted(ids)
            assert all(f.peak <= 4 for f in fakes.values()), [f.peak for f in fakes.values()]
            assert sum(f.peak for f in fakes.values()) > 3  # it did use the spare capacity


async def test_a_busy_event_loop_holds_batch_work_back(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(capacity_config(tmp_path, 4, max_loop_lag_ms=10)) as gw:
        runner = gw.services.batch_runner
        assert not runner.capacity.loop_busy()
        runner.capacity.loop_lag = 0.05  # the access point answers 50 ms late
        assert runner.capacity.loop_busy()
    async with gateway_factory(capacity_config(tmp_path / "off", 4, max_loop_lag_ms=0)) as gw:
        gw.services.batch_runner.capacity.loop_lag = 5.0
        assert not gw.services.batch_runner.capacity.loop_busy()
