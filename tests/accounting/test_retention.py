"""Retention: old usage and availability rows go, the audit log stays."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.accounting.conftest import insert, usage
from verbund.accounting import Retention, SiteAvailability
from verbund.accounting import _retention as retention_module
from verbund.audit import AuditLog
from verbund.config import RetentionConfig
from verbund.store import AuditRow, AvailabilityRow, Store, UsageRow

DAY = 86400
NOW = 1_750_000_000.0


async def count(store: Store, table: type) -> int:
    async with store.session() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def test_purge_deletes_only_what_is_past_retention(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "CHUNK", 7)  # several chunks
    audit = AuditLog(store)
    for i in range(3):
        async with store.session() as s, s.begin():
            await audit.append(s, actor="admin", action="key.create", target=f"key_{i}")
    old = [usage(NOW - 401 * DAY - i) for i in range(20)]
    young = [usage(NOW - 399 * DAY), usage(NOW - 1)]
    await insert(store, *old, *young)
    avail = SiteAvailability(store, "ap-1", clock=lambda: NOW - 91 * DAY)
    avail.observe({"west": True})
    await avail.flush()
    avail = SiteAvailability(store, "ap-1", clock=lambda: NOW - 60)
    avail.observe({"west": False})
    await avail.flush()

    retention = Retention(store, audit, RetentionConfig(), clock=lambda: NOW)
    deleted = await retention.purge()
    assert deleted == {"usage_records": 20, "site_availability": 1}
    assert await count(store, UsageRow) == 2
    assert await count(store, AvailabilityRow) == 1
    # the audit log is never purged; the purge itself is recorded
    rows = await audit.entries()
    assert [r.action for r in rows] == ["key.create"] * 3 + ["retention.purge"]
    assert '"usage_records":20' in rows[-1].after
    assert (await audit.verify()).ok
    # nothing left to delete: no new audit entry
    assert await retention.purge() == {"usage_records": 0, "site_availability": 0}
    assert len(await audit.entries()) == 4


async def test_zero_days_keeps_forever(store: Store) -> None:
    await insert(store, usage(1.0))
    retention = Retention(
        store,
        AuditLog(store),
        RetentionConfig(usage_days=0, availability_days=0),
        clock=lambda: NOW,
    )
    assert await retention.purge() == {"usage_records": 0, "site_availability": 0}
    assert await count(store, UsageRow) == 1
    assert await count(store, AuditRow) == 0
