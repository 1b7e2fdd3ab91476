"""Migrations: the schema the code writes is the schema the migrations make."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from verbund.store import Store


async def test_usage_records_have_byte_columns(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await store.migrate()
        await store.migrate()  # idempotent
        async with store.engine.connect() as conn:
            cols = await conn.run_sync(
                lambda c: {col["name"]: col for col in inspect(c).get_columns("usage_records")}
            )
        assert cols["request_bytes"]["nullable"] and cols["response_bytes"]["nullable"]
    finally:
        await store.aclose()
