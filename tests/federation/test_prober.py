"""The prober's cost stays flat with the size of the federation: one shared side client,
probes spread over the interval, a bounded probe rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.polling import apoll
from tests.conftest import federation_dict
from verbund.config import RoutingConfig, parse_config
from verbund.federation import Federation, HealthTracker, Prober, UpstreamPool, _upstream


def big_federation(tmp_path: Path, sites: int, per_site: int, **routing: Any) -> Federation:
    data = federation_dict(
        tmp_path,
        sites=[
            {
                "name": f"s{i}",
                "backends": [
                    {"name": f"s{i}-b{j}", "url": f"http://s{i}-b{j}.invalid:8000", "models": ["m"]}
                    for j in range(per_site)
                ],
            }
            for i in range(sites)
        ],
    )
    data["models"] = [{"name": "m"}]
    data["institutions"] = []
    data["gateway"]["home_site"] = "s0"
    data["routing"].update(routing)
    return Federation(parse_config(data))


def test_one_side_client_for_all_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An httpx client per backend built its own SSL context: 0.7 MB and 26 ms each."""
    built: list[object] = []

    class Counting(httpx.AsyncClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_upstream.httpx, "AsyncClient", Counting)
    fed = big_federation(tmp_path, 50, 4)
    pool = UpstreamPool(fed, fed.config.routing)
    assert len(built) <= 1
    assert isinstance(pool.side, _upstream.AiohttpSide)


async def test_probes_are_spread_over_the_interval(tmp_path: Path) -> None:
    """A round used to start every probe at once and hold the loop ~0.8 ms per backend."""
    fed = big_federation(tmp_path, 25, 4, probe_interval=1.0, max_probe_rate=0)
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.setdefault(request.url.host, loop.time())
        return httpx.Response(200, json={"data": []})

    routing = fed.config.routing
    pool = UpstreamPool(fed, routing, lambda b: httpx.MockTransport(handler))
    import random

    prober = Prober(fed, pool, HealthTracker(routing, fed), routing, rng=random.Random(7))
    began = loop.time()
    task = asyncio.ensure_future(prober.run())
    try:
        await apoll(lambda: len(sent) == 100, "every backend probed once", 10.0)
    finally:
        task.cancel()
        await pool.aclose()
    times = sorted(sent.values())
    assert times[-1] - times[0] > 0.3  # spread over the interval, not one burst
    ticks = {round(t - began, 3) for t in times}
    assert len(ticks) > 20  # many separate moments, not one gather


def test_the_probe_rate_is_bounded_but_not_for_backends_out_of_rotation(
    tmp_path: Path,
) -> None:
    fed = big_federation(tmp_path, 100, 4, probe_interval=2.0, max_probe_rate=50)
    routing = fed.config.routing
    prober = Prober(fed, UpstreamPool(fed, routing), HealthTracker(routing, fed), routing)
    b = fed.backends["s0-b0"]
    now = time.monotonic()
    assert prober.interval(b, 400, now) == 8.0  # 400 backends at 50 probes/s
    assert prober.interval(b, 40, now) == 2.0  # few backends: every probe_interval
    b.healthy = False  # down: probed every interval, recovery must not wait
    assert prober.interval(b, 400, now) == 2.0
    unbounded = RoutingConfig(max_probe_rate=0)
    assert (
        Prober(fed, UpstreamPool(fed, unbounded), HealthTracker(unbounded), unbounded).interval(
            fed.backends["s0-b1"], 400, now
        )
        == unbounded.probe_interval
    )


async def test_a_backend_that_just_answered_a_request_is_not_probed(tmp_path: Path) -> None:
    fed = big_federation(tmp_path, 1, 2, probe_interval=0.3, max_probe_rate=0)
    probed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        probed.append(request.url.host)
        return httpx.Response(200, json={"data": []})

    routing = fed.config.routing
    pool = UpstreamPool(fed, routing, lambda b: httpx.MockTransport(handler))
    prober = Prober(fed, pool, HealthTracker(routing, fed), routing)
    busy = fed.backends["s0-b0"]

    async def answering() -> None:  # real requests keep vouching for it
        while True:
            busy.last_success = time.monotonic()
            await asyncio.sleep(0.005)

    requests = asyncio.ensure_future(answering())
    await asyncio.sleep(0)
    task = asyncio.ensure_future(prober.run())
    try:
        for _ in range(3):
            seen = len(probed)
            await apoll(lambda: len(probed) > seen, "a probe", 5.0)  # noqa: B023
    finally:
        task.cancel()
        requests.cancel()
        await pool.aclose()
    assert "s0-b0.invalid" not in probed and "s0-b1.invalid" in probed
