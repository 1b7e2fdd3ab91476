"""Role-scoped keys for the admin API: a site operator's key (what a site agent holds),
an institution admin's key, an auditor's key, another federation admin's key.

Like institution keys they are random, shown once and stored as SHA-256 hashes. There
are few of them, so every access point holds all of them in memory: loaded at start,
reloaded when another access point announces a change (and by the periodic resync).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from verbund.audit import AuditLog, Who
from verbund.coordination import EventBus, LocalBus
from verbund.errors import NotFound
from verbund.store import AdminKeyRow, Store
from verbund.tenancy import Actor, Role, hash_key, new_secret

__all__ = ["AdminKeyService", "CreatedAdminKey"]

ADMIN_KEY_ID_PREFIX = "akey_"


@dataclass(frozen=True, slots=True)
class CreatedAdminKey:
    id: str
    key: str
    role: Role
    institution: str | None
    site: str | None
    name: str
    created_at: int


def _actor(row: AdminKeyRow) -> Actor:
    return Actor("key", row.id, Role(row.role), row.institution_id, row.site)


class AdminKeyService:
    def __init__(self, store: Store, audit: AuditLog, bus: EventBus | None = None) -> None:
        self._store = store
        self._audit = audit
        self._bus = bus or LocalBus()
        self._by_hash: dict[str, Actor] = {}

    async def load(self) -> int:
        async with self._store.session() as s:
            rows = (await s.execute(select(AdminKeyRow))).scalars().all()
        self._by_hash = {r.key_hash: _actor(r) for r in rows if r.revoked_at is None}
        return len(self._by_hash)

    def resolve(self, secret: str) -> Actor | None:
        return self._by_hash.get(hash_key(secret))

    async def create(
        self,
        role: Role,
        *,
        institution: str | None,
        site: str | None,
        name: str,
        actor: Who,
    ) -> CreatedAdminKey:
        secret = new_secret()
        now = time.time()
        row = AdminKeyRow(
            id=ADMIN_KEY_ID_PREFIX + secrets.token_hex(8),
            key_hash=hash_key(secret),
            prefix=secret[:8],
            name=name,
            role=role.value,
            institution_id=institution,
            site=site,
            created_at=now,
        )
        async with self._store.session() as s, s.begin():
            s.add(row)
            await self._audit.append(
                s,
                actor=actor,
                action="admin_key.create",
                target=row.id,
                after={"role": role.value, "institution": institution, "site": site, "name": name},
            )
        self._by_hash[row.key_hash] = _actor(row)
        await self._bus.publish({"type": "admin_key.changed"})
        return CreatedAdminKey(row.id, secret, role, institution, site, name, int(now))

    async def revoke(self, key_id: str, actor: Who) -> None:
        async with self._store.session() as s, s.begin():
            row = await s.get(AdminKeyRow, key_id)
            if row is None:
                raise NotFound(f"No key with id '{key_id}'.", param="id")
            if row.revoked_at is not None:
                return
            row.revoked_at = time.time()
            await self._audit.append(
                s,
                actor=actor,
                action="admin_key.revoke",
                target=key_id,
                before={"revoked_at": None},
                after={"revoked_at": "set"},
            )
        self._by_hash.pop(row.key_hash, None)
        await self._bus.publish({"type": "admin_key.changed"})

    async def list(self) -> list[AdminKeyRow]:
        async with self._store.session() as s:
            return list(
                (await s.execute(select(AdminKeyRow).order_by(AdminKeyRow.created_at))).scalars()
            )

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "admin_key.changed":
            await self.load()
