"""API keys: created once, stored hashed, resolved from memory, revoked, failing closed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from verbund.audit import AuditLog
from verbund.config import InstitutionConfig
from verbund.errors import NotFound, StoreUnavailable
from verbund.store import ApiKeyRow, Store
from verbund.tenancy import InstitutionRegistry, KeyService, hash_key, new_secret


async def add_members(store: Store, audit: AuditLog) -> None:
    """Keys belong to institutions (a foreign key): uni-a and uni-b."""
    members = [InstitutionConfig(id="uni-a"), InstitutionConfig(id="uni-b")]
    await InstitutionRegistry(store, audit).sync_from_config(members)


@pytest.fixture(autouse=True)
async def members(store: Store, audit: AuditLog) -> None:
    await add_members(store, audit)


async def test_a_created_key_resolves_and_only_its_hash_is_stored(
    store: Store, audit: AuditLog
) -> None:
    keys = KeyService(store, audit)
    created = await keys.create("uni-a", "moodle", actor="admin")
    assert created.key.startswith("vb-") and created.institution == "uni-a"
    entry = await keys.resolve(created.key)
    assert entry is not None and entry.id == created.id and entry.institution_id == "uni-a"
    async with store.session() as s:
        row = (await s.execute(select(ApiKeyRow))).scalar_one()
    assert row.key_hash == hash_key(created.key)
    assert created.key not in {row.key_hash, row.prefix, row.id}
    assert await keys.resolve(new_secret()) is None


async def test_a_revoked_key_no_longer_resolves(store: Store, audit: AuditLog) -> None:
    keys = KeyService(store, audit)
    created = await keys.create("uni-a", "hawki", actor="admin")
    with pytest.raises(NotFound):  # another institution's key is not found for uni-b
        await keys.revoke(created.id, actor="uni-b", institution_id="uni-b")
    assert await keys.resolve(created.key) is not None
    await keys.revoke(created.id, actor="admin")
    assert await keys.resolve(created.key) is None
    fresh = KeyService(store, audit)  # another access point, loading from the store
    await fresh.load()
    assert await fresh.resolve(created.key) is None


async def test_a_key_made_elsewhere_resolves_once_its_event_arrives(
    store: Store, audit: AuditLog
) -> None:
    here, there = KeyService(store, audit), KeyService(store, audit)
    secret_guess = new_secret()
    assert await here.resolve(secret_guess) is None  # remembered as unknown for a while
    created = await there.create("uni-a", "batch", actor="admin")
    assert await here.resolve(created.key) is not None  # a different hash: a store lookup
    async with store.session() as s, s.begin():
        s.add(
            ApiKeyRow(
                id="key_guessed",
                key_hash=hash_key(secret_guess),
                prefix=secret_guess[:8],
                institution_id="uni-b",
                name="made at another access point",
                created_at=time.time(),
            )
        )
    assert await here.resolve(secret_guess) is None  # the negative cache still answers
    await here.on_event({"type": "key.changed", "hash": hash_key(secret_guess)})
    entry = await here.resolve(secret_guess)
    assert entry is not None and entry.institution_id == "uni-b"


async def test_without_the_store_cached_keys_work_and_unknown_keys_fail_closed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "keys.db"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.migrate()
    await add_members(store, AuditLog(store))
    keys = KeyService(store, AuditLog(store))
    created = await keys.create("uni-a", "moodle", actor="admin")
    await store.engine.dispose()
    db.rename(tmp_path / "gone.db")  # a new connection finds an empty database: no tables
    try:
        entry = await keys.resolve(created.key)
        assert entry is not None and entry.id == created.id
        with pytest.raises(StoreUnavailable):
            await keys.resolve(new_secret())
    finally:
        await store.aclose()
