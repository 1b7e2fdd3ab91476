"""A fresh, migrated store per test: SQLite, and a real PostgreSQL (marked ``real``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import orjson
import pytest
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import create_async_engine

from harness.services import Postgres
from verbund.accounting import UsageRecord
from verbund.store import Store, UsageRow


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    pg = Postgres.create()
    yield pg
    pg.destroy()


async def fresh_pg_database(pg: Postgres) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_async_engine(
        pg.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f"CREATE DATABASE {name}")
    await admin.dispose()
    return pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.real)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'verbund.db'}"
    else:
        url = await fresh_pg_database(request.getfixturevalue("pg_server"))
    st = Store(url)
    await st.migrate()
    yield st
    await st.aclose()


def usage(
    ts: float,
    institution: str = "uni-a",
    site: str = "west",
    model: str = "smol",
    *,
    prompt: int = 10,
    completion: int = 5,
    status: str = "ok",
    endpoint: str = "/v1/chat/completions",
    access_point: str = "ap-1",
) -> UsageRecord:
    return UsageRecord(
        request_id=uuid.uuid4().hex,
        access_point=access_point,
        institution_id=institution,
        key_id="key_1",
        endpoint=endpoint,
        model=model,
        site=site,
        backend=f"{site}-1",
        prompt_tokens=prompt,
        completion_tokens=completion,
        status=status,
        ts=ts,
    )


async def insert(store: Store, *records: UsageRecord) -> None:
    """Write records straight into the store, as another access point's flusher would."""
    table = cast(Table, UsageRow.__table__)
    await store.insert_json_ignoring_duplicates(table, "id", orjson.dumps(list(records)))
