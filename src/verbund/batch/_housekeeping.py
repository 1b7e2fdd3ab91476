"""Keeping the list of running batches fresh: expiry, cancellation, batches to finalize.

Every few poll intervals (or at once when a batch was created, cancelled, or has nothing
left to run here) housekeeping reads the active batches and the counts of their items
and decides, in :func:`survey`, what each batch needs:

- a batch whose completion window has ended gets ``final_status = expired``;
- the items of an expired or cancelled batch that have not started stop (pending ones,
  and running ones whose lease has run out: their runner died);
- a batch with nothing pending or running, a stopped one, and a finalization whose lease
  has run out are ready to finalize;
- the rest run, and the runner keeps a lane for each.

The writes are SQLAlchemy Core statements that work alike on SQLite and PostgreSQL; each
is conditional, so several access points may do housekeeping at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update

from verbund.batch._items import ItemStore
from verbund.batch._objects import BatchStatus, ItemStatus
from verbund.batch._writes import SerialWrites
from verbund.store import BatchRow, Store

__all__ = ["UNDER_WAY", "Housekeeping", "Survey", "survey"]

log = logging.getLogger("verbund.batch")

# batches a runner works on: the others wait for validation or have ended
UNDER_WAY = (BatchStatus.in_progress, BatchStatus.cancelling, BatchStatus.finalizing)


@dataclass(frozen=True, slots=True)
class Survey:
    expiring: list[str]  # completion window ended just now
    stops: dict[str, ItemStatus]  # batch -> the status its unstarted items end in
    ready: list[str]  # to finalize
    running: list[BatchRow]  # with items to hand out


def survey(rows: Iterable[BatchRow], counts: dict[str, dict[str, int]], now: float) -> Survey:
    """What each active batch needs, from its row and its items per status. Pure."""
    rows = list(rows)
    expiring = [
        r.id
        for r in rows
        if r.status == BatchStatus.in_progress and r.final_status is None and now >= r.expires_at
    ]
    stops: dict[str, ItemStatus] = {}
    for row in rows:
        if row.id in expiring:
            stops[row.id] = ItemStatus.expired
        elif row.final_status and row.status != BatchStatus.finalizing:
            stops[row.id] = (
                ItemStatus.expired
                if row.final_status == BatchStatus.expired
                else ItemStatus.cancelled
            )
    ready: list[str] = []
    running: list[BatchRow] = []
    for row in rows:
        c = counts[row.id]
        unfinished = c.get(ItemStatus.pending, 0) + c.get(ItemStatus.running, 0)
        if row.status == BatchStatus.finalizing:
            if row.lease_until < now:
                ready.append(row.id)
        elif row.id in stops or not unfinished:
            ready.append(row.id)
        elif row.status == BatchStatus.in_progress:
            running.append(row)
    return Survey(expiring, stops, ready, running)


class Housekeeping:
    def __init__(self, store: Store, items: ItemStore, writes: SerialWrites) -> None:
        self._store = store
        self._items = items
        self._writes = writes

    async def look(self, now: float) -> Survey:
        """Survey the active batches and write what expired and what stops."""
        async with self._store.session() as s:
            rows = list(
                (await s.execute(select(BatchRow).where(BatchRow.status.in_(UNDER_WAY)))).scalars()
            )
            counts = await self._items.counts(s, [r.id for r in rows])
        found = survey(rows, counts, now)
        if found.stops:
            await self._stop(found)
        return found

    async def _stop(self, found: Survey) -> None:
        async with self._writes.turn(), self._store.session() as s, s.begin():
            for batch_id in found.expiring:
                await s.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.final_status.is_(None))
                    .values(final_status=BatchStatus.expired.value)
                )
                log.info("batch %s: completion window ended", batch_id)
            for batch_id, status in found.stops.items():
                await self._items.stop_unstarted(s, batch_id, status)
