"""Migration 0004_jobs on a store that already holds usage from before it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from verbund.store import Store, alembic_config


def _upgrade_to(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def test_old_usage_rows_get_zero_cpu_and_gpu_seconds(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0001")
            await conn.execute(
                text(
                    "INSERT INTO usage_records (id, ts, request_id, access_point, institution_id,"
                    " key_id, endpoint, model, site, backend, prompt_tokens, completion_tokens,"
                    " status, http_status, latency_ms, ttft_ms, stream, priority, attempts,"
                    " usage_estimated) VALUES ('u1', 1.0, 'r1', 'ap', 'uni-a', 'k', "
                    "'/v1/chat/completions', 'm', 's', 'b', 1, 2, 'ok', 200, 3.0, NULL, 0,"
                    " 'interactive', 1, 0)"
                )
            )
        await store.migrate()
        async with store.engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT cpu_seconds, gpu_seconds FROM usage_records"))
            ).one()
            tables = {
                r[0]
                for r in await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type='table'")
                )
            }
        assert tuple(row) == (0.0, 0.0)
        assert {"training_jobs", "training_job_events"} <= tables
    finally:
        await store.aclose()
