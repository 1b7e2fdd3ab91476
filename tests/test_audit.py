"""The audit chain catches a row edited behind the program's back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from verbund.audit import AuditLog
from verbund.store import Store


async def test_tampering_is_detected(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    await store.migrate()
    audit = AuditLog(store)
    for i in range(4):
        async with store.session() as s, s.begin():
            await audit.append(
                s,
                actor="admin",
                action="key.create",
                target=f"key_{i}",
                after={"institution": "uni-a"},
            )
    assert (await audit.verify()).ok
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET target = 'key_x' WHERE seq = 3"))
    result = await audit.verify()
    assert not result.ok and result.first_broken == 3 and result.reason == "entry was changed"
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET target = 'key_2' WHERE seq = 3"))
        await conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    result = await audit.verify()
    assert not result.ok and result.first_broken == 3
    assert result.reason == "previous hash does not match"
    await store.aclose()
