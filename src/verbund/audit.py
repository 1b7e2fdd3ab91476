"""The hash-chained audit log of administrative actions.

Each entry stores the hash of the one before it; the entry's own hash covers its fields
and that previous hash. Changing, inserting or deleting a row breaks the chain at that
row, and :func:`verify` names the first broken entry.

Every entry names its actor (a person's pseudonymous subject, a key id, ``admin`` for the
bootstrap key, or a component such as ``config``) and, for people and keys, the actor's
role. The role is part of the hash; entries written before roles existed (role "")
hash as they always did, so old chains still verify.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from verbund.store import AuditRow, Store

GENESIS = "0" * 64
_RETRIES = 5
# pg_advisory_xact_lock's key for the audit chain (any constant shared by all writers)
_CHAIN_LOCK = 0x5645_5242_4155_4449  # "VERBAUDI"

__all__ = [
    "GENESIS",
    "AuditLog",
    "NamedActor",
    "VerifyResult",
    "Who",
    "entry_hash",
    "verify_chain",
    "who_name",
]


class NamedActor(Protocol):
    """An actor with a role (``verbund.tenancy.Actor``), as the audit log records it."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


Who = str | NamedActor  # a component's name ("config", "retention") or an actor


def who_name(who: Who) -> tuple[str, str]:
    """(actor, role) of ``who``; components have no role."""
    return (who, "") if isinstance(who, str) else (who.id, str(who.role))


async def _lock_chain(session: AsyncSession) -> None:
    """Take the chain's database-wide write lock for the rest of the transaction."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    else:  # SQLite: a write statement begins the transaction and takes the write lock
        await session.execute(text("UPDATE audit_log SET seq = seq WHERE seq < 0"))


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(
    prev_hash: str,
    ts: float,
    actor: str,
    action: str,
    target: str,
    before: str,
    after: str,
    role: str = "",
) -> str:
    fields = [prev_hash, repr(ts), actor, action, target, before, after]
    payload = _canonical([*fields, role] if role else fields)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str = ""


class AuditLog:
    """Appends within the caller's transaction so the action and its record commit together."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()

    async def append(
        self,
        session: AsyncSession,
        *,
        actor: Who,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
    ) -> AuditRow:
        """Append after the chain's head, serialised in the database.

        The lock is the database's, not this process's, because several access points
        (and several workers of one) write the same chain: on PostgreSQL a
        transaction-scoped advisory lock, on SQLite a write that takes the database's
        write lock at once (an immediate transaction). Either is held until the caller's
        transaction ends, so the head read after it is the head the entry follows. The
        unique previous hash is the backstop: should two writers still meet, the
        loser's savepoint rolls back and it re-reads the head.
        """
        name, role = who_name(actor)
        b, a = _canonical(before), _canonical(after)
        # the database's lock first, then this process's: a transaction that already
        # holds the database's lock (a second entry, or after serialise) must never wait
        # for this process's lock while another coroutine holds that and waits for the
        # database's
        await _lock_chain(session)
        async with self._lock:
            for attempt in range(_RETRIES):
                last = (
                    await session.execute(
                        select(AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
                    )
                ).scalar_one_or_none()
                prev = last or GENESIS
                ts = time.time()
                row = AuditRow(
                    ts=ts,
                    actor=name,
                    role=role,
                    action=action,
                    target=target,
                    before=b,
                    after=a,
                    prev_hash=prev,
                    hash=entry_hash(prev, ts, name, action, target, b, a, role),
                )
                try:
                    async with session.begin_nested():
                        session.add(row)
                        await session.flush()
                except IntegrityError:
                    if attempt == _RETRIES - 1:
                        raise
                    continue
                return row
        raise AssertionError("unreachable")  # pragma: no cover

    async def serialise(self, session: AsyncSession) -> None:
        """Take the chain's write lock now, for the rest of ``session``'s transaction: a
        write that reads state first and then records its change (the config's
        institutions at start, the config load) must not meet another writer that read
        the same state (several workers start at once)."""
        await _lock_chain(session)

    async def record_config_load(self, sha256: str, access_point: str) -> bool:
        """Append ``config.load`` if the config differs from the last one recorded."""
        async with self._store.session() as s, s.begin():
            await self.serialise(s)
            last = (
                await s.execute(
                    select(AuditRow.after)
                    .where(AuditRow.action == "config.load")
                    .order_by(AuditRow.seq.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            previous = orjson.loads(last).get("sha256") if last else None
            if previous == sha256:
                return False
            await self.append(
                s,
                actor="config",
                action="config.load",
                target=access_point,
                before={"sha256": previous},
                after={"sha256": sha256},
            )
        return True

    async def entries(self, limit: int = 1000, after_seq: int = 0) -> list[AuditRow]:
        async with self._store.session() as s:
            rows = await s.execute(
                select(AuditRow).where(AuditRow.seq > after_seq).order_by(AuditRow.seq).limit(limit)
            )
            return list(rows.scalars())

    async def linked_hashes(self) -> tuple[VerifyResult, list[str]]:
        """The chain checked link by link, and its entries' hashes in chain order up to
        the first broken one: entry #i (1-based) is ``[i - 1]``. One pass for those who
        need both (checkpoints)."""
        hashes: list[str] = []
        return await self._walk(hashes), hashes

    async def verify(self) -> VerifyResult:
        return await self._walk(None)

    async def _walk(self, hashes: list[str] | None) -> VerifyResult:
        prev = GENESIS
        count = 0
        async with self._store.session() as s:
            result = await s.stream_scalars(select(AuditRow).order_by(AuditRow.seq))
            async for row in result:
                count += 1
                if row.prev_hash != prev:
                    return VerifyResult(False, count, row.seq, "previous hash does not match")
                expected = entry_hash(
                    row.prev_hash,
                    row.ts,
                    row.actor,
                    row.action,
                    row.target,
                    row.before,
                    row.after,
                    row.role or "",
                )
                if expected != row.hash:
                    return VerifyResult(False, count, row.seq, "entry was changed")
                prev = row.hash
                if hashes is not None:
                    hashes.append(prev)
        return VerifyResult(True, count)


def verify_chain(entries: Iterable[Mapping[str, Any]]) -> VerifyResult:
    """Check exported entries (``verbund audit export``) without access to the store."""
    prev = GENESIS
    count = 0
    for e in entries:
        count += 1
        if e["prev_hash"] != prev:
            return VerifyResult(False, count, e["seq"], "previous hash does not match")
        expected = entry_hash(
            e["prev_hash"],
            e["ts"],
            e["actor"],
            e["action"],
            e["target"],
            e["before"],
            e["after"],
            e.get("role") or "",
        )
        if expected != e["hash"]:
            return VerifyResult(False, count, e["seq"], "entry was changed")
        prev = e["hash"]
    return VerifyResult(True, count)
