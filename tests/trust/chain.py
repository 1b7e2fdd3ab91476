"""Helpers for trust tests: partners with keys, and the three ways to falsify a chain."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from verbund.audit import AuditLog, entry_hash
from verbund.store import AuditRow, Store
from verbund.trust import PartnerKeys, SigningKey


def partner(name: str) -> SigningKey:
    return SigningKey(name, Ed25519PrivateKey.generate())


def keyring(*partners: SigningKey) -> PartnerKeys:
    return PartnerKeys({p.name: p.public_b64 for p in partners})


async def append(store: Store, audit: AuditLog, n: int, actor: str = "admin") -> None:
    for i in range(n):
        async with store.session() as s, s.begin():
            await audit.append(s, actor=actor, action="key.create", target=f"key_{actor}_{i}")


async def truncate(store: Store, keep: int) -> None:
    """Delete every entry after the first ``keep`` (what a database owner can do)."""
    async with store.session() as s, s.begin():
        seqs = list((await s.execute(select(AuditRow.seq).order_by(AuditRow.seq))).scalars())
        for seq in seqs[keep:]:
            await s.execute(text("DELETE FROM audit_log WHERE seq = :q"), {"q": seq})


async def rewrite(store: Store, position: int, target: str) -> None:
    """Change entry #position and recompute every hash after it: the chain still links."""
    async with store.session() as s, s.begin():
        rows = list((await s.execute(select(AuditRow).order_by(AuditRow.seq))).scalars())
        new: list[tuple[int, str, str]] = []
        prev = rows[position - 2].hash if position > 1 else "0" * 64
        for i, r in enumerate(rows[position - 1 :]):
            t = target if i == 0 else r.target
            h = entry_hash(prev, r.ts, r.actor, r.action, t, r.before, r.after, r.role or "")
            new.append((r.seq, prev, h))
            prev = h
        for seq, _, _ in new:  # free the unique hashes first
            await s.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :q"),
                {"p": f"x{seq}".ljust(64, "x"), "h": f"y{seq}".ljust(64, "y"), "q": seq},
            )
        for i, (seq, p, h) in enumerate(new):
            t = {"t": target} if i == 0 else {}
            sets = ", target = :t" if t else ""
            await s.execute(
                text(f"UPDATE audit_log SET prev_hash = :p, hash = :h{sets} WHERE seq = :q"),
                {"p": p, "h": h, "q": seq, **t},
            )
