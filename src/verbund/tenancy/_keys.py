"""API keys: random tokens shown once, stored as SHA-256 hashes, looked up from memory.

A key looks like ``vb-<43 url-safe characters>`` (256 random bits), so a fast hash is
enough: there is nothing to brute-force. Logs and the store only ever see the key id
(``key_<16 hex>``) and a short display prefix.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select, update

from verbund.audit import AuditLog
from verbund.errors import NotFound
from verbund.store import ApiKeyRow, Store

KEY_PREFIX = "vb-"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: str
    institution_id: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    key: str
    institution: str
    name: str
    created_at: int


class KeyService:
    """Creates, revokes and resolves keys. Resolution hits the store only on a cache miss."""

    NEGATIVE_TTL = 5.0
    NEGATIVE_MAX = 10_000

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit
        self._by_hash: dict[str, KeyEntry] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()

    async def load(self) -> int:
        async with self._store.session() as s:
            rows = (await s.execute(select(ApiKeyRow))).scalars().all()
        self._by_hash = {
            r.key_hash: KeyEntry(r.id, r.institution_id, r.revoked_at is not None) for r in rows
        }
        return len(self._by_hash)

    async def resolve(self, secret: str) -> KeyEntry | None:
        h = hash_key(secret)
        entry = self._by_hash.get(h)
        if entry is not None:
            return None if entry.revoked else entry
        now = time.monotonic()
        seen = self._misses.get(h)
        if seen is not None and now - seen < self.NEGATIVE_TTL:
            return None
        async with self._store.session() as s:
            row = (await s.execute(select(ApiKeyRow).where(ApiKeyRow.key_hash == h))).scalar()
        if row is None:
            self._misses[h] = now
            self._misses.move_to_end(h)
            while len(self._misses) > self.NEGATIVE_MAX:
                self._misses.popitem(last=False)
            return None
        entry = KeyEntry(row.id, row.institution_id, row.revoked_at is not None)
        self._by_hash[h] = entry
        return None if entry.revoked else entry

    async def create(self, institution_id: str, name: str, actor: str) -> CreatedKey:
        secret = new_secret()
        key_id = "key_" + secrets.token_hex(8)
        now = time.time()
        row = ApiKeyRow(
            id=key_id,
            key_hash=hash_key(secret),
            prefix=secret[:8],
            institution_id=institution_id,
            name=name,
            created_at=now,
        )
        async with self._store.session() as s, s.begin():
            s.add(row)
            await self._audit.append(
                s,
                actor=actor,
                action="key.create",
                target=key_id,
                after={"institution": institution_id, "name": name},
            )
        self._by_hash[row.key_hash] = KeyEntry(key_id, institution_id, False)
        self._misses.pop(row.key_hash, None)
        return CreatedKey(key_id, secret, institution_id, name, int(now))

    async def revoke(self, key_id: str, actor: str, institution_id: str | None = None) -> None:
        async with self._store.session() as s, s.begin():
            row = await s.get(ApiKeyRow, key_id)
            if row is None or (institution_id is not None and row.institution_id != institution_id):
                raise NotFound(f"No key with id '{key_id}'.", param="id")
            if row.revoked_at is None:
                await s.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(revoked_at=time.time())
                )
                await self._audit.append(
                    s,
                    actor=actor,
                    action="key.revoke",
                    target=key_id,
                    before={"revoked": False},
                    after={"revoked": True},
                )
            key_hash = row.key_hash
        self._by_hash[key_hash] = KeyEntry(key_id, row.institution_id, True)

    async def list(self, institution_id: str | None = None) -> list[ApiKeyRow]:
        async with self._store.session() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
            if institution_id:
                q = q.where(ApiKeyRow.institution_id == institution_id)
            return list((await s.execute(q)).scalars())
