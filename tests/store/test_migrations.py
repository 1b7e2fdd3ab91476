"""The migrations form one line and produce exactly the tables the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from verbund.store import Base, Store, alembic_config


def test_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads


def test_file_names_follow_the_chain() -> None:
    """Sorted by file name, the migrations run in order (revision ids need not match)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    chain = [Path(r.path).name for r in reversed(list(scripts.walk_revisions()))]
    assert chain == sorted(chain)
    assert [name[:4] for name in chain] == [f"{i:04d}" for i in range(1, len(chain) + 1)]


async def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await store.migrate()
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await store.aclose()
    assert diff == []


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
