"""Site availability: probe rounds per minute, written in batches, shown on /status."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import Gateway
from verbund.accounting import SiteAvailability
from verbund.store import AvailabilityRow, Store

T0 = 1_750_000_020.0  # 20 s into a minute


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def test_rounds_are_counted_per_minute_and_written_as_rows(store: Store) -> None:
    clock = Clock()
    a = SiteAvailability(store, "ap-1", clock=clock, cache_seconds=0)
    for up in (True, True, False):
        a.observe({"west": up, "ost": True})
    clock.now += 60
    a.observe({"west": False, "ost": True})
    assert await a.flush() == 4
    assert await a.flush() == 0
    # a restart within the same minute adds to the row instead of failing
    b = SiteAvailability(store, "ap-1", clock=clock, cache_seconds=0)
    b.observe({"west": True})
    await b.flush()
    async with store.session() as s:
        rows = (
            (
                await s.execute(
                    select(AvailabilityRow).order_by(AvailabilityRow.minute, AvailabilityRow.site)
                )
            )
            .scalars()
            .all()
        )
    minute = int(T0 // 60 * 60)
    assert [(r.site, r.minute - minute, r.up, r.total) for r in rows] == [
        ("ost", 0, 3, 3),
        ("west", 0, 2, 3),
        ("ost", 60, 1, 1),
        ("west", 60, 1, 2),
    ]
    # another access point's view counts too; unflushed rounds are included
    c = SiteAvailability(store, "ap-2", clock=clock, cache_seconds=0)
    c.observe({"west": True, "sued": False})
    assert await c.last_24h() == {"ost": 1.0, "west": 4 / 6, "sued": 0.0}
    # a day later the first minute has left the window
    clock.now += 86400
    assert await c.last_24h() == {"ost": 1.0, "west": 2 / 3, "sued": 0.0}


async def test_reads_are_cached(store: Store) -> None:
    clock = Clock()
    a = SiteAvailability(store, "ap-1", clock=clock, cache_seconds=10)
    other = SiteAvailability(store, "ap-2", clock=clock)
    assert await a.last_24h() == {}
    other.observe({"west": True})
    await other.flush()
    assert await a.last_24h() == {}  # cached
    clock.now += 10
    assert await a.last_24h() == {"west": 1.0}


async def test_store_down_keeps_counts_in_memory(tmp_path: Path) -> None:
    broken = Store(f"sqlite+aiosqlite:///{tmp_path}/not-migrated.db")  # no table: writes fail
    a = SiteAvailability(broken, "ap-1", clock=Clock(), cache_seconds=0)
    a.observe({"west": True})
    assert await a.flush() == 0
    assert await a.last_24h() == {"west": 1.0}
    await broken.migrate()
    assert await a.flush() == 1
    assert await a.last_24h() == {"west": 1.0}
    await broken.aclose()


async def test_status_shows_availability_without_tenant_data(gw: Gateway) -> None:
    body = (await gw.client.get("/status")).json()
    assert all(s["availability_24h"] is None for s in body["sites"])
    gw.fakes["ost-1"].mode = "refuse"
    for _ in range(4):
        await gw.services.health.prober.probe_all()
    gw.fakes["ost-1"].mode = "ok"
    await gw.services.health.prober.probe_all()
    gw.services.accounting.availability._stored_at = -1e18  # skip the 10 s cache
    r = await gw.client.get("/status")
    sites = {s["name"]: s for s in r.json()["sites"]}
    assert sites["west"]["availability_24h"] == 1.0
    assert sites["ost"]["availability_24h"] == pytest.approx(0.2)
    assert "uni-a" not in r.text and "key_" not in r.text
    html = await gw.client.get("/status", headers={"accept": "text/html"})
    assert "availability (24 h)" in html.text and "20.00 %" in html.text


async def test_sites_in_maintenance_are_not_counted(gw: Gateway) -> None:
    await gw.client.post("/admin/sites/ost/maintenance", headers=gw.admin())
    await gw.services.health.prober.probe_all()
    counted = {site for site, _ in gw.services.accounting.availability._pending}
    assert counted == {"west", "sued"}


async def test_series_buckets_stored_and_pending_rounds(store: Store) -> None:
    """The console's charts: availability per hour (or day), gaps where nothing was probed."""
    clock = Clock()
    a = SiteAvailability(store, "ap-1", clock=clock, cache_seconds=0)
    start = int(T0 // 3600 * 3600)
    a.observe({"west": True, "ost": False})
    await a.flush()
    clock.now += 2 * 3600  # two hours later, not yet written
    a.observe({"west": False})
    a.observe({"west": True})
    series = await a.series(start, 3600, 3)
    assert series == {"ost": [0.0, None, None], "west": [1.0, None, 0.5]}
    assert await a.series(start + 3 * 3600, 3600, 2) == {}  # nothing in that window
