"""Batch items in the store: claiming with a lease, renewing, recording results.

An item is claimed by setting its lease (owner and expiry) in one statement that only
matches items that are pending, or running under a lease that has expired, so two
access points (or a restarted one) never run the same item at once, and an item whose
runner died is taken over when its lease ends. On PostgreSQL the candidates are locked
with ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite, where writers are serialised, a
conditional ``UPDATE ... RETURNING`` does the same. A result counts only if the lease
is still the recorder's when it is written.

Leases are set and judged by the store's clock (:func:`verbund.store.store_now`), never
by an access point's: one whose clock runs ahead would otherwise see live leases as
expired and run (and bill) their items a second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from verbund.batch._objects import TERMINAL, BatchCounts, BatchStatus, ItemStatus
from verbund.store import BatchItemRow, BatchRow, Store

__all__ = ["ClaimedItem", "ItemStore", "Outcome", "counts_from_rows"]

_I = BatchItemRow


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    id: int
    batch_id: str
    line: int
    custom_id: str
    offset: int
    length: int
    attempts: int


@dataclass(slots=True)
class Outcome:
    """What became of one claimed item; ``line`` is its line for the output or error file."""

    item: ClaimedItem
    # retry: another attempt later; wait: later, and this one did not count as an attempt
    # (a token quota's window was full; the item was never sent)
    kind: Literal["done", "failed", "retry", "wait"]
    line: bytes = b""
    next_try_at: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def final(self) -> bool:
        """The item is finished (done or failed) and has a line for a result file."""
        return self.kind in ("done", "failed")


def counts_from_rows(total: int, rows: Iterable[tuple[str, int, int, int]]) -> BatchCounts:
    completed = failed = tin = tout = 0
    for status, n, p, c in rows:
        tin += p or 0
        tout += c or 0
        if status == ItemStatus.done:
            completed += n
        elif status in (ItemStatus.failed, ItemStatus.cancelled, ItemStatus.expired):
            failed += n
    return BatchCounts(total, completed, failed, tin, tout)


class ItemStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pg = store.engine.dialect.name == "postgresql"

    async def claim(self, batch_id: str, n: int, owner: str, lease: float) -> list[ClaimedItem]:
        now = self._store.now_sql()
        claimable = and_(
            _I.batch_id == batch_id,
            or_(
                and_(_I.status == ItemStatus.pending, _I.next_try_at <= now),
                and_(_I.status == ItemStatus.running, _I.lease_until < now),
            ),
        )
        values = {
            "status": ItemStatus.running.value,
            "lease_owner": owner,
            "lease_until": now + lease,
            "attempts": _I.attempts + 1,
        }
        returning = (
            _I.id,
            _I.line,
            _I.custom_id,
            _I.input_offset,
            _I.input_length,
            _I.attempts,
        )
        async with self._store.session() as s, s.begin():
            candidates = select(_I.id).where(claimable).order_by(_I.id).limit(n)
            if self._pg:
                ids = list(
                    (await s.execute(candidates.with_for_update(skip_locked=True))).scalars()
                )
                if not ids:
                    return []
                stmt = update(_I).where(_I.id.in_(ids)).values(**values).returning(*returning)
            else:
                stmt = (
                    update(_I)
                    .where(_I.id.in_(candidates.scalar_subquery()), claimable)
                    .values(**values)
                    .returning(*returning)
                )
            rows = (await s.execute(stmt)).all()
        return sorted(
            (ClaimedItem(r[0], batch_id, r[1], r[2], r[3], r[4], r[5]) for r in rows),
            key=lambda c: c.id,
        )

    async def renew(self, owner: str, lease: float) -> None:
        now = self._store.now_sql()
        async with self._store.session() as s, s.begin():
            await s.execute(
                update(_I)
                .where(_I.lease_owner == owner, _I.status == ItemStatus.running)
                .values(lease_until=now + lease)
            )
            await s.execute(
                update(BatchRow)
                .where(BatchRow.lease_owner == owner, BatchRow.status == BatchStatus.finalizing)
                .values(lease_until=now + lease)
            )

    async def record(
        self, outcomes: list[Outcome], parts: dict[int, tuple[str, int, int]], owner: str
    ) -> int:
        """Write outcomes whose lease is still ``owner``'s; returns how many counted.

        Two statements executed for many rows each, so the store's write lock is held
        for a moment only.
        """
        t = cast(Table, BatchItemRow.__table__)
        mine = and_(
            t.c.id == bindparam("b_id"),
            t.c.lease_owner == owner,
            t.c.status == ItemStatus.running.value,
        )
        retries = [
            {"b_id": o.item.id, "b_next": o.next_try_at, "b_uncount": int(o.kind == "wait")}
            for o in outcomes
            if not o.final
        ]
        results = [
            {
                "b_id": o.item.id,
                "b_status": (ItemStatus.done if o.kind == "done" else ItemStatus.failed).value,
                "b_part": parts[o.item.id][0],
                "b_offset": parts[o.item.id][1],
                "b_length": parts[o.item.id][2],
                "b_prompt": o.prompt_tokens,
                "b_completion": o.completion_tokens,
            }
            for o in outcomes
            if o.final
        ]
        applied = 0
        async with self._store.session() as s, s.begin():
            if results:
                r = await s.execute(
                    update(t)
                    .where(mine)
                    .values(
                        status=bindparam("b_status"),
                        lease_owner=None,
                        lease_until=0.0,
                        result_part=bindparam("b_part"),
                        result_offset=bindparam("b_offset"),
                        result_length=bindparam("b_length"),
                        prompt_tokens=bindparam("b_prompt"),
                        completion_tokens=bindparam("b_completion"),
                    ),
                    results,
                )
                applied += int(getattr(r, "rowcount", 0) or 0)
            if retries:
                r = await s.execute(
                    update(t)
                    .where(mine)
                    .values(
                        status=ItemStatus.pending.value,
                        next_try_at=bindparam("b_next"),
                        attempts=t.c.attempts - bindparam("b_uncount"),
                        lease_owner=None,
                        lease_until=0.0,
                    ),
                    retries,
                )
                applied += int(getattr(r, "rowcount", 0) or 0)
        return applied

    async def release(self, owner: str, ids: list[int] | None, status: ItemStatus) -> None:
        """Give items held by ``owner`` up: all of them (``ids`` None) or the given ones.

        Items given back as ``pending`` that never started (``ids`` given) do not count
        as an attempt.
        """
        values: dict[str, object] = {
            "status": status.value,
            "lease_owner": None,
            "lease_until": 0.0,
        }
        cond = and_(_I.lease_owner == owner, _I.status == ItemStatus.running)
        async with self._store.session() as s, s.begin():
            if ids is None:
                await s.execute(update(_I).where(cond).values(**values))
                return
            if status == ItemStatus.pending:
                values["attempts"] = _I.attempts - 1
            for i in range(0, len(ids), 500):
                await s.execute(
                    update(_I).where(cond, _I.id.in_(ids[i : i + 500])).values(**values)
                )

    async def counts(self, s: AsyncSession, batch_ids: list[str]) -> dict[str, dict[str, int]]:
        """Items per status of each batch (only statuses that occur)."""
        out: dict[str, dict[str, int]] = {b: {} for b in batch_ids}
        if not batch_ids:
            return out
        rows = await s.execute(
            select(_I.batch_id, _I.status, func.count())
            .where(_I.batch_id.in_(batch_ids))
            .group_by(_I.batch_id, _I.status)
        )
        for batch_id, status, n in rows:
            out[batch_id][status] = n
        return out

    async def batch_counts(self, s: AsyncSession, row: BatchRow) -> BatchCounts:
        """Live counts of a batch that still has items; stored counts once it has ended."""
        if row.status in TERMINAL:
            return BatchCounts(
                row.total, row.completed, row.failed, row.input_tokens, row.output_tokens
            )
        rows = await s.execute(
            select(
                _I.status,
                func.count(),
                func.coalesce(func.sum(_I.prompt_tokens), 0),
                func.coalesce(func.sum(_I.completion_tokens), 0),
            )
            .where(_I.batch_id == row.id)
            .group_by(_I.status)
        )
        return counts_from_rows(row.total, [(r[0], r[1], r[2], r[3]) for r in rows])

    async def stop_unstarted(self, s: AsyncSession, batch_id: str, status: ItemStatus) -> None:
        """Items that will not run any more (cancel, expiry): pending ones and dead leases."""
        now = self._store.now_sql()
        await s.execute(
            update(_I)
            .where(
                _I.batch_id == batch_id,
                or_(
                    _I.status == ItemStatus.pending,
                    and_(_I.status == ItemStatus.running, _I.lease_until < now),
                ),
            )
            .values(status=status.value, lease_owner=None, lease_until=0.0)
        )
