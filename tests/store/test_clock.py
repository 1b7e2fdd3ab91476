"""One clock for what access points decide together: an access point whose own clock is
off goes by the store's, and says how far off it is in /readyz and in its metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, MODEL, federation_dict
from tests.fakes import FakeBackend, transport_factory
from verbund.config import parse_config
from verbund.gateway import create_app
from verbund.store import Store, StoreClock

AHEAD = 40 * 86400.0  # this host's clock is in another month


async def test_store_clock_measures_the_offset(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}")
    try:
        clock = StoreClock(store, local=lambda: time.time() + 40)
        assert clock.skew is None
        skew = await clock.sync()
        assert 39 < skew < 41 and clock.skew == skew
        assert abs(clock.now() - time.time()) < 1
        assert abs(await store.now() - time.time()) < 1
    finally:
        await store.aclose()


async def test_a_host_clock_in_another_month_reports_skew_and_budgets_by_the_store(
    tmp_path: Path,
) -> None:
    data = federation_dict(tmp_path)
    data["institutions"][0]["budget_tokens_per_month"] = 1_000_000
    cfg = parse_config(data)
    fakes = {b.name: FakeBackend(b.name) for s in cfg.sites for b in s.backends}
    app = create_app(
        cfg,
        admin_key=ADMIN_KEY,
        transport_factory=transport_factory(fakes),
        background=False,
        local_clock=lambda: time.time() + AHEAD,
    )
    svc = app.state.services
    async with app.router.lifespan_context(app):
        key = (await svc.keys.create("uni-a", "t", actor="t")).key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ap") as client:
            ready = (await client.get("/readyz")).json()
            skew = ready["clock_skew_seconds"]
            assert set(skew) == {"store"}  # no Redis configured
            assert skew["store"] == pytest.approx(AHEAD, abs=2)
            metrics = (await client.get("/metrics")).text
            found = re.search(r'verbund_clock_skew_seconds\{reference="store"\} (\S+)', metrics)
            assert found and float(found.group(1)) == pytest.approx(AHEAD, abs=2)
            # the batch runner and the budgets go by the store's clock
            assert svc.batch_runner._clock() == pytest.approx(time.time(), abs=2)
            r = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}]},
                headers={"authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200, r.text
            budgets = (
                await client.get("/admin/budgets", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            ).json()
            (uni_a,) = [b for b in budgets["data"] if b["institution"] == "uni-a"]
            assert uni_a["tokens"] > 0  # counted in this month, not dropped as last month's
