"""A migrated SQLite store and an audit log for the tenancy services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from verbund.audit import AuditLog
from verbund.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    st = Store(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}")
    await st.migrate()
    yield st
    await st.aclose()


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store)
