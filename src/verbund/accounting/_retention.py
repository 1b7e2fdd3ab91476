"""Retention: usage records and availability rows older than configured are deleted.

Runs as a background task of every access point (deleting is idempotent, so several
access points may run it). Deletes go in chunks so no single transaction holds the
store for long; a purge that deleted something leaves one ``retention.purge`` entry in
the audit log. The audit log itself is never purged: its hash chain is the record of
what administrators did, and dropping old entries would break verification.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import delete, select

from verbund.audit import AuditLog
from verbund.config import RetentionConfig
from verbund.store import STORE_FAILURES, AvailabilityRow, Store, UsageRow

log = logging.getLogger("verbund.retention")

DAY = 86400
Purge = Callable[[float], Awaitable[dict[str, int]]]
CHUNK = 5000


class Retention:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        config: RetentionConfig,
        *,
        interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._cfg = config
        self._interval = interval
        self._clock = clock
        self._purges: list[Purge] = []

    def add_purge(self, purge: Purge) -> None:
        """Another feature's data past its time (expired files): called with the
        current time on every round; its counts join the round's audit entry."""
        self._purges.append(purge)

    async def purge(self) -> dict[str, int]:
        """Delete what is past its retention; returns rows deleted per table."""
        now = self._clock()
        deleted = {"usage_records": 0, "site_availability": 0}
        cutoffs: dict[str, float] = {}
        if self._cfg.usage_days:
            cutoffs["usage_records"] = now - self._cfg.usage_days * DAY
            while True:
                ids = select(UsageRow.id).where(UsageRow.ts < cutoffs["usage_records"])
                async with self._store.session() as s, s.begin():
                    result = await s.execute(
                        delete(UsageRow).where(UsageRow.id.in_(ids.limit(CHUNK).scalar_subquery()))
                    )
                n = int(getattr(result, "rowcount", 0) or 0)
                deleted["usage_records"] += n
                if n < CHUNK:
                    break
        if self._cfg.availability_days:
            cutoffs["site_availability"] = now - self._cfg.availability_days * DAY
            async with self._store.session() as s, s.begin():
                result = await s.execute(
                    delete(AvailabilityRow).where(
                        AvailabilityRow.minute < cutoffs["site_availability"]
                    )
                )
            deleted["site_availability"] = int(getattr(result, "rowcount", 0) or 0)
        for purge in self._purges:
            deleted.update(await purge(now))
        if any(deleted.values()):
            async with self._store.session() as s, s.begin():
                await self._audit.append(
                    s,
                    actor="retention",
                    action="retention.purge",
                    target="store",
                    after={"deleted": deleted, "before": cutoffs},
                )
            log.info("retention purge: %s", deleted)
        return deleted

    async def run(self) -> None:
        while True:
            try:
                await self.purge()
            except STORE_FAILURES as exc:
                log.warning("retention purge failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
