"""The store's clock: the one clock of leases and months that all access points share.

Each access point's own clock may be off (an unsynchronised host, a VM resumed from a
pause). Whatever several access points decide together by time (who holds a batch item,
which month a budget counts in) goes by the store's clock instead: in SQL as
:func:`store_now` (``now()`` in PostgreSQL, SQLite's own ``julianday('now')``), and in
Python as :class:`StoreClock`, the local clock corrected by the offset to the store's
measured from time to time. The offset is also this access point's clock skew, reported
in ``/readyz`` and as a metric.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, cast, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from verbund.store._errors import STORE_FAILURES

if TYPE_CHECKING:
    from verbund.store._db import Store

__all__ = ["CLOCK_SYNC_SECONDS", "StoreClock", "store_now"]

log = logging.getLogger("verbund.store")

CLOCK_SYNC_SECONDS = 30.0
"""How often the offset to the store's clock is measured again."""

SKEW_WARNING_SECONDS = 1.0


def store_now(dialect: str) -> ColumnElement[Any]:
    """The store's current Unix time, in seconds, as an SQL expression."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", func.now()), Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


class StoreClock:
    """The local clock plus the offset to the store's; ``skew`` is how far the local clock
    is ahead of the store's (negative: behind), None until measured."""

    def __init__(self, store: Store, local: Callable[[], float] = time.time) -> None:
        self._store = store
        self._local = local
        self.offset = 0.0
        self.skew: float | None = None

    def now(self) -> float:
        return self._local() + self.offset

    async def sync(self) -> float:
        """Measure the offset (half the round trip is taken as the one-way delay)."""
        before = self._local()
        store_time = await self._store.now()
        after = self._local()
        offset = store_time - (before + after) / 2
        if abs(offset) > SKEW_WARNING_SECONDS and (
            self.skew is None or abs(self.skew + offset) > SKEW_WARNING_SECONDS
        ):
            log.warning("this host's clock is %.1f s off the store's; using the store's", -offset)
        self.offset, self.skew = offset, -offset
        return self.skew

    async def run(self, every: float = CLOCK_SYNC_SECONDS) -> None:
        while True:
            try:
                await self.sync()
            except STORE_FAILURES as exc:  # keep the last offset
                log.warning("store clock: store unavailable (%s)", type(exc).__name__)
            await asyncio.sleep(every)
