"""API keys: random tokens shown once, stored as SHA-256 hashes, looked up from memory.

A key looks like ``vb-<43 url-safe characters>`` (256 random bits), so a fast hash is
enough: there is nothing to brute-force. Logs and the store only ever see the key id
(``key_<16 hex>``) and a short display prefix.

Every access point keeps all keys in memory. Changes made at one access point reach the
others as events (see :mod:`verbund.coordination`) and, as a safety net, by a periodic
reload. While the store is unreachable, cached keys keep working and unknown keys fail
closed with 503.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from verbund.audit import AuditLog, Who
from verbund.coordination import EventBus, LocalBus
from verbund.errors import NotFound, Overloaded, StoreUnavailable
from verbund.store import RETRY_AFTER_SECONDS, STORE_FAILURES, ApiKeyRow, Store

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
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    person_id: str | None = None  # a person's own key: usage is attributed to them
    expires_at: float | None = None
    data_class: str | None = None  # the key's default data class (None: the institution's)
    front_end: bool = False  # a front-end's key: its user headers name the person
    model_kinds: tuple[str, ...] = ()  # what GET /v1/models lists for it; () = all

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    key: str
    institution: str
    name: str
    created_at: int


def _entry(row: ApiKeyRow) -> KeyEntry:
    return KeyEntry(
        row.id,
        row.institution_id,
        row.revoked_at is not None,
        row.requests_per_minute or 0,
        row.tokens_per_minute or 0,
        row.person_id,
        row.expires_at,
        row.data_class,
        bool(row.front_end),
        tuple(row.model_kinds or ()),
    )


class KeyService:
    """Creates, revokes and resolves keys. Resolution hits the store only on a cache miss."""

    NEGATIVE_TTL = 5.0
    NEGATIVE_MAX = 10_000
    # store lookups of keys not in the cache at once; more are refused (every valid key
    # is loaded at start and announced when created, so a miss is rare unless someone
    # is trying random keys, and that must not take the store's connections)
    MAX_LOOKUPS = 16

    def __init__(self, store: Store, audit: AuditLog, bus: EventBus | None = None) -> None:
        self._store = store
        self._audit = audit
        self._bus = bus or LocalBus()
        self._by_hash: dict[str, KeyEntry] = {}
        self._by_id: dict[str, KeyEntry] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()
        self._lookups = 0

    @property
    def cached(self) -> int:
        return len(self._by_hash)

    async def load(self) -> int:
        async with self._store.session() as s:
            rows = (await s.execute(select(ApiKeyRow))).scalars().all()
        self._by_hash = {r.key_hash: _entry(r) for r in rows}
        self._by_id = {e.id: e for e in self._by_hash.values()}
        return len(self._by_hash)

    def by_id(self, key_id: str) -> KeyEntry | None:
        """A known key by its id (batch work charges the key that created the batch)."""
        return self._by_id.get(key_id)

    async def resolve(self, secret: str) -> KeyEntry | None:
        h = hash_key(secret)
        entry = self._by_hash.get(h)
        if entry is not None:
            return entry if entry.usable(time.time()) else None
        now = time.monotonic()
        seen = self._misses.get(h)
        if seen is not None and now - seen < self.NEGATIVE_TTL:
            return None
        if self._lookups >= self.MAX_LOOKUPS:
            raise Overloaded(
                "Too many unknown keys are being checked at once; retry shortly.",
                headers={"retry-after": "1"},
            )
        self._lookups += 1
        try:
            async with self._store.session() as s:
                row = (await s.execute(select(ApiKeyRow).where(ApiKeyRow.key_hash == h))).scalar()
        except STORE_FAILURES:
            # fail closed: the key may be valid, but nothing here can tell
            raise StoreUnavailable(
                "The key could not be checked: the federation store is unreachable.",
                headers={"retry-after": str(RETRY_AFTER_SECONDS)},
            ) from None
        finally:
            self._lookups -= 1
        if row is None:
            self._misses[h] = now
            self._misses.move_to_end(h)
            while len(self._misses) > self.NEGATIVE_MAX:
                self._misses.popitem(last=False)
            return None
        entry = _entry(row)
        self._cache(h, entry)
        return entry if entry.usable(time.time()) else None

    async def create(
        self,
        institution_id: str,
        name: str,
        actor: Who,
        *,
        person_id: str | None = None,
        expires_at: float | None = None,
        data_class: str | None = None,
    ) -> CreatedKey:
        """A new key; ``person_id`` makes it a person's own (their usage, their quota)."""
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
            person_id=person_id,
            expires_at=expires_at,
            data_class=data_class,
        )
        after: dict[str, Any] = {"institution": institution_id, "name": name}
        if person_id is not None:
            after.update(person=person_id, expires_at=expires_at, data_class=data_class)
        async with self._store.session() as s, s.begin():
            s.add(row)
            await self._audit.append(
                s, actor=actor, action="key.create", target=key_id, after=after
            )
        self._cache(row.key_hash, _entry(row))
        await self._bus.publish({"type": "key.changed", "hash": row.key_hash})
        return CreatedKey(key_id, secret, institution_id, name, int(now))

    async def revoke(
        self,
        key_id: str,
        actor: Who,
        institution_id: str | None = None,
        person_id: str | None = None,
    ) -> None:
        """Revoke; with ``institution_id``/``person_id`` only a key of theirs (else 404)."""
        row = await self._update(
            key_id, actor, "key.revoke", institution_id, person_id, revoked_at=time.time()
        )
        await self._bus.publish({"type": "key.changed", "hash": row.key_hash})

    async def set_quotas(
        self, key_id: str, actor: Who, requests_per_minute: int, tokens_per_minute: int
    ) -> ApiKeyRow:
        row = await self._update(
            key_id,
            actor,
            "key.quota",
            None,
            None,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        await self._bus.publish({"type": "key.changed", "hash": row.key_hash})
        return row

    async def set_settings(
        self, key_id: str, actor: Who, institution_id: str | None = None, **values: Any
    ) -> ApiKeyRow:
        """Change a key's settings (``front_end``, ``model_kinds``); audited. With
        ``institution_id`` only a key of that institution (else 404)."""
        row = await self._update(key_id, actor, "key.settings", institution_id, None, **values)
        await self._bus.publish({"type": "key.changed", "hash": row.key_hash})
        return row

    async def _update(
        self,
        key_id: str,
        actor: Who,
        action: str,
        institution_id: str | None,
        person_id: str | None,
        **values: Any,
    ) -> ApiKeyRow:
        async with self._store.session() as s, s.begin():
            row = await s.get(ApiKeyRow, key_id)
            if (
                row is None
                or (institution_id is not None and row.institution_id != institution_id)
                or (person_id is not None and row.person_id != person_id)
            ):
                raise NotFound(f"No key with id '{key_id}'.", param="id")
            if action == "key.revoke" and row.revoked_at is not None:
                return row
            before = {k: getattr(row, k) for k in values}
            for k, v in values.items():
                setattr(row, k, v)
            after = {k: ("set" if k == "revoked_at" else v) for k, v in values.items()}
            if "revoked_at" in before:
                before["revoked_at"] = None
            await self._audit.append(
                s, actor=actor, action=action, target=key_id, before=before, after=after
            )
        self._cache(row.key_hash, _entry(row))
        return row

    def _cache(self, key_hash: str, entry: KeyEntry) -> None:
        self._by_hash[key_hash] = entry
        self._by_id[entry.id] = entry
        self._misses.pop(key_hash, None)

    async def on_event(self, event: dict[str, Any]) -> None:
        """Another access point changed a key: read it again from the store."""
        if event.get("type") != "key.changed" or not isinstance(event.get("hash"), str):
            return
        key_hash = event["hash"]
        self._misses.pop(key_hash, None)
        try:
            async with self._store.session() as s:
                row = (
                    await s.execute(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
                ).scalar()
        except STORE_FAILURES:
            gone = self._by_hash.pop(key_hash, None)  # unknown: fail closed until the store is back
            if gone is not None:
                self._by_id.pop(gone.id, None)
            return
        if row is not None:
            self._cache(key_hash, _entry(row))

    async def list(
        self, institution_id: str | None = None, person_id: str | None = None
    ) -> list[ApiKeyRow]:
        async with self._store.session() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
            if institution_id:
                q = q.where(ApiKeyRow.institution_id == institution_id)
            if person_id:
                q = q.where(ApiKeyRow.person_id == person_id)
            return list((await s.execute(q)).scalars())
