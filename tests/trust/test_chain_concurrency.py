"""Several access points and workers appending at once keep one chain (no fork).

Before appends were serialised in the database, each process only serialised its own
appends (an asyncio lock), so two writers read the same head and both appended after it:
``verify`` then reported tampering that never happened.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from harness.services import Postgres
from verbund.audit import AuditLog
from verbund.store import Store

ACCESS_POINTS = 3
WORKERS = 4
APPENDS = 10


async def _append_many(audit: AuditLog, store: Store, who: str, n: int) -> None:
    for i in range(n):
        async with store.session() as s, s.begin():
            await audit.append(s, actor=who, action="test.append", target=f"{who}-{i}")


async def _hammer(url: str) -> None:
    """ACCESS_POINTS engines (each an access point with its own AuditLog), WORKERS
    concurrent writers each."""
    stores = [Store(url) for _ in range(ACCESS_POINTS)]
    try:
        await stores[0].migrate()
        audits = [AuditLog(s) for s in stores]
        await asyncio.gather(
            *(
                _append_many(audits[a], stores[a], f"ap{a}-w{w}", APPENDS)
                for a in range(ACCESS_POINTS)
                for w in range(WORKERS)
            )
        )
        result = await audits[0].verify()
        assert result.ok, result
        assert result.entries == ACCESS_POINTS * WORKERS * APPENDS
    finally:
        for s in stores:
            await s.aclose()


@pytest.mark.real
async def test_access_points_on_one_postgres_keep_one_chain(pg: Postgres) -> None:
    await _hammer(pg.url)


_WRITER = """
import asyncio, sys
from verbund.audit import AuditLog
from verbund.store import Store

async def main(url: str, who: str, n: int) -> None:
    store = Store(url)
    audit = AuditLog(store)
    for i in range(n):
        async with store.session() as s, s.begin():
            await audit.append(s, actor=who, action="test.append", target=f"{who}-{i}")
    await store.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _processes(url: str, n: int) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, f"proc{p}", str(n)]) for p in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0


@pytest.mark.real
async def test_processes_on_one_postgres_keep_one_chain(pg: Postgres) -> None:
    store = Store(pg.url)
    await store.migrate()
    await asyncio.to_thread(_processes, pg.url, 25)
    result = await AuditLog(store).verify()
    await store.aclose()
    assert result.ok, result
    assert result.entries == 75


async def test_workers_on_one_sqlite_file_keep_one_chain(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.db'}"
    store = Store(url)
    await store.migrate()
    await asyncio.to_thread(_processes, url, 25)
    result = await AuditLog(store).verify()
    await store.aclose()
    assert result.ok, result
    assert result.entries == 75
