"""Institutions: the config is authoritative for those it names; changes are validated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from verbund.audit import AuditLog
from verbund.config import InstitutionConfig
from verbund.errors import BadRequest, NotFound
from verbund.store import Store
from verbund.tenancy import InstitutionRegistry


async def actions(audit: AuditLog) -> list[str]:
    return [e.action for e in await audit.entries()]


async def test_config_sync_creates_updates_and_keeps_admin_made_ones(
    store: Store, audit: AuditLog
) -> None:
    reg = InstitutionRegistry(store, audit)
    await reg.sync_from_config([InstitutionConfig(id="uni-a", home_region="NW")])
    await reg.create(InstitutionConfig(id="uni-x", home_region="BY"), actor="admin")
    await reg.sync_from_config([InstitutionConfig(id="uni-a", home_region="NW")])  # unchanged
    assert await actions(audit) == ["institution.create", "institution.create"]

    await reg.sync_from_config([InstitutionConfig(id="uni-a", home_region="SN")])
    assert (await actions(audit))[-1] == "institution.update"
    again = InstitutionRegistry(store, audit)  # another access point
    await again.load()
    assert [(i.id, i.home_region) for i in again.all()] == [("uni-a", "SN"), ("uni-x", "BY")]


async def test_updates_are_validated_like_the_config(store: Store, audit: AuditLog) -> None:
    reg = InstitutionRegistry(store, audit)
    await reg.sync_from_config([InstitutionConfig(id="uni-a")])
    with pytest.raises(BadRequest, match="colour"):
        await reg.update("uni-a", {"colour": "blue"}, actor="admin")
    with pytest.raises(BadRequest, match="requests_per_minute"):
        await reg.update("uni-a", {"requests_per_minute": -1}, actor="admin")
    with pytest.raises(NotFound):
        await reg.update("uni-z", {"requests_per_minute": 1}, actor="admin")
    updated = await reg.update("uni-a", {"requests_per_minute": 60}, actor="admin")
    assert updated.requests_per_minute == 60
    got = reg.get("uni-a")
    assert got is not None and got.requests_per_minute == 60


async def test_workers_starting_at_once_create_each_institution_once(
    store: Store, tmp_path: Path
) -> None:
    """Several workers sync the same config at start, each with its own connection: one
    creates the institutions, the others find them (none fails on a duplicate)."""
    configured = [InstitutionConfig(id=f"uni-{i}", home_region="NW") for i in range(3)]
    workers = [Store(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}") for _ in range(3)]
    try:
        registries = [InstitutionRegistry(w, AuditLog(w)) for w in workers]
        await asyncio.gather(*(r.sync_from_config(configured) for r in registries))
        assert all(len(r.all()) == 3 for r in registries)
        audit = AuditLog(store)
        assert await actions(audit) == ["institution.create"] * 3
        assert (await audit.verify()).ok
    finally:
        for w in workers:
            await w.aclose()
