"""The batch runner's store writes: one writer at a time on SQLite, and what a store
outage looks like.

SQLite has a single writer and its busy wait sleeps in steps of up to 100 ms, so the
runner's own loops (claims, results, expiry, lease renewals) take turns instead of
colliding; PostgreSQL locks rows and needs no turns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError

from verbund.errors import StoreError
from verbund.store import Store

__all__ = ["STORE_ERRORS", "SerialWrites"]

# the store is away for a while: the runner's loops log, wait and try again
STORE_ERRORS = (SQLAlchemyError, StoreError, OSError)


class SerialWrites:
    def __init__(self, store: Store) -> None:
        self._lock = asyncio.Lock() if store.engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield
