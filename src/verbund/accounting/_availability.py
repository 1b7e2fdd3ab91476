"""Site availability: health-probe rounds counted per site and UTC minute.

The prober reports each round (site -> at least one backend answered its probe) to
:meth:`SiteAvailability.observe`, which only bumps in-memory counters. A background task
writes them every ``flush_seconds`` as rows (site, access point, minute, up, total),
adding to a row that exists (a restart within a minute, or a partial minute written
before). ``/status`` reads the last 24 hours from the store (every access point's rows),
adds what is not written yet, and caches the answer for ``cache_seconds``.

A site's availability is the fraction of probe rounds in which it was up. Sites in
``maintenance`` are not probed, so planned maintenance does not count against them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from verbund.store import STORE_FAILURES, AvailabilityRow, Store

log = logging.getLogger("verbund.availability")

DAY = 86400
MAX_PENDING = 7 * 24 * 60 * 16  # minutes x sites kept while the store is away


class SiteAvailability:
    def __init__(
        self,
        store: Store,
        access_point: str,
        *,
        flush_seconds: float = 60.0,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ap = access_point
        self._flush_seconds = flush_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._pending: dict[tuple[str, int], list[int]] = {}  # (site, minute) -> [up, total]
        self._stored: dict[str, tuple[int, int]] = {}
        self._stored_at = -1e18
        self._lock = asyncio.Lock()

    def observe(self, round_result: dict[str, bool]) -> None:
        """One probe round: site name -> any backend healthy. Memory only."""
        minute = int(self._clock() // 60 * 60)
        for site, up in round_result.items():
            counts = self._pending.get((site, minute))
            if counts is None:
                counts = self._pending[(site, minute)] = [0, 0]
            counts[0] += int(up)
            counts[1] += 1
        if len(self._pending) > MAX_PENDING:
            for key in sorted(self._pending)[: len(self._pending) - MAX_PENDING]:
                del self._pending[key]

    def _upsert(self) -> Any:
        pg = self._store.engine.dialect.name == "postgresql"
        stmt = pg_insert(AvailabilityRow) if pg else sqlite_insert(AvailabilityRow)
        return stmt.on_conflict_do_update(
            index_elements=["site", "access_point", "minute"],
            set_={
                "up": AvailabilityRow.up + stmt.excluded.up,
                "total": AvailabilityRow.total + stmt.excluded.total,
            },
        )

    async def flush(self) -> int:
        """Write the counted rounds; they stay in memory if the store refuses them."""
        async with self._lock:
            if not self._pending:
                return 0
            batch, self._pending = self._pending, {}
            rows = [
                {"site": s, "access_point": self._ap, "minute": m, "up": c[0], "total": c[1]}
                for (s, m), c in sorted(batch.items())
            ]
            try:
                async with self._store.session() as s, s.begin():
                    await s.execute(self._upsert(), rows)
            except STORE_FAILURES as exc:
                log.warning("availability write failed (%s); kept in memory", type(exc).__name__)
                for key, (up, total) in batch.items():
                    counts = self._pending.setdefault(key, [0, 0])
                    counts[0] += up
                    counts[1] += total
                return 0
            self._stored_at = -1e18  # the next read sees the new rows
            return len(rows)

    async def _read_stored(self, since: int) -> dict[str, tuple[int, int]]:
        q = (
            select(
                AvailabilityRow.site,
                func.sum(AvailabilityRow.up),
                func.sum(AvailabilityRow.total),
            )
            .where(AvailabilityRow.minute >= since)
            .group_by(AvailabilityRow.site)
        )
        async with self._store.session() as s:
            return {r[0]: (int(r[1]), int(r[2])) for r in (await s.execute(q)).all()}

    async def last_24h(self) -> dict[str, float | None]:
        """Site -> availability over the last 24 hours (0..1), None for a site without data."""
        now = self._clock()
        since = int(now // 60 * 60) - DAY
        if now - self._stored_at >= self._cache_seconds:
            try:
                self._stored = await self._read_stored(since)
            except STORE_FAILURES as exc:
                log.warning("availability read failed: %s", type(exc).__name__)
            self._stored_at = now
        totals = {site: list(c) for site, c in self._stored.items()}
        for (site, minute), (up, total) in self._pending.items():
            if minute >= since:
                counts = totals.setdefault(site, [0, 0])
                counts[0] += up
                counts[1] += total
        return {site: (up / total if total else None) for site, (up, total) in totals.items()}

    async def series(self, since: int, bucket: int, buckets: int) -> dict[str, list[float | None]]:
        """Site -> availability in each of ``buckets`` periods of ``bucket`` seconds from
        ``since`` (hours of a day, days of a month: the console's charts), None where no
        probe round was counted. Summed in the store, plus what is not written yet."""
        until = since + bucket * buckets
        index = ((AvailabilityRow.minute - since) // bucket).label("i")
        q = (
            select(
                AvailabilityRow.site,
                index,
                func.sum(AvailabilityRow.up),
                func.sum(AvailabilityRow.total),
            )
            .where(AvailabilityRow.minute >= since, AvailabilityRow.minute < until)
            .group_by(AvailabilityRow.site, index)
        )
        counts: dict[str, list[list[int]]] = {}

        def add(site: str, i: int, up: int, total: int) -> None:
            if 0 <= i < buckets:
                c = counts.setdefault(site, [[0, 0] for _ in range(buckets)])[i]
                c[0] += up
                c[1] += total

        async with self._store.session() as s:
            for site, i, up, total in (await s.execute(q)).all():
                add(site, int(i), int(up), int(total))
        for (site, minute), (up, total) in self._pending.items():
            if since <= minute < until:
                add(site, (minute - since) // bucket, up, total)
        return {site: [u / t if t else None for u, t in cs] for site, cs in sorted(counts.items())}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()
