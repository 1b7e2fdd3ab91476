"""Writing one job's row: each step of a job in its own short transaction.

A step reads the row, talks to a site (slow, outside any transaction), then writes what
it learnt with :meth:`JobRows.update`, which locks the row and applies the change. Every
step is in the store before the next one starts, so an access point that restarts
carries on from the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from verbund.jobs._events import add_event
from verbund.jobs._status import TERMINAL, JobStatus, move
from verbund.store import Store, TrainingJobRow

log = logging.getLogger("verbund.jobs")

Change = Callable[[AsyncSession, TrainingJobRow], None]


@dataclass(frozen=True, slots=True)
class JobRows:
    store: Store

    async def get(self, job_id: str) -> TrainingJobRow | None:
        async with self.store.session() as s:
            return await s.get(TrainingJobRow, job_id)

    async def update(self, job_id: str, apply: Change) -> None:
        """Apply ``apply`` to the locked row (if it still exists) and commit."""
        async with self.store.session() as s, s.begin():
            row = await s.get(TrainingJobRow, job_id, with_for_update=True)
            if row is not None:
                apply(s, row)

    async def fail(self, job_id: str, code: str, message: str, param: str | None = None) -> None:
        """End the job as failed with an OpenAI-shaped error, unless it has ended already
        (another access point may have cancelled it meanwhile)."""

        def apply(s: AsyncSession, row: TrainingJobRow) -> None:
            if row.status in TERMINAL:
                return
            move(row, JobStatus.failed)
            row.error = {"code": code, "message": message, "param": param}
            row.finished_at = row.finished_at or time.time()
            add_event(s, row.id, f"Job failed: {message}", level="error")

        await self.update(job_id, apply)
        log.info("job %s failed (%s)", job_id, code)

    async def succeeded(self) -> list[TrainingJobRow]:
        """The jobs that succeeded with a model (to know their models after a start)."""
        async with self.store.session() as s:
            q = select(TrainingJobRow).where(
                TrainingJobRow.status == JobStatus.succeeded,
                TrainingJobRow.fine_tuned_model.is_not(None),
            )
            return list((await s.execute(q)).scalars().all())

    async def unfinished(self, placed: InstrumentedAttribute[object]) -> list[TrainingJobRow]:
        """The jobs a loop still has work for, oldest first: those not ended, and those
        ended whose runner has not confirmed its end (``placed`` is the column that is set
        once a runner or site holds the job)."""
        async with self.store.session() as s:
            q = (
                select(TrainingJobRow)
                .where(
                    or_(
                        TrainingJobRow.status.not_in(TERMINAL),
                        and_(placed.is_not(None), TrainingJobRow.runner_done.is_(False)),
                    )
                )
                .order_by(TrainingJobRow.created_at)
            )
            return list((await s.execute(q)).scalars().all())

    async def cancel(self, job_id: str, actor: str, note: str = "") -> str | None:
        """Cancel the job unless it has ended already; its status after (None: no job).
        ``note`` says what became of the cancellation sent to the runner or site."""
        status: str | None = None

        def apply(s: AsyncSession, row: TrainingJobRow) -> None:
            nonlocal status
            if row.status not in TERMINAL:
                row.cancel_requested = True
                move(row, JobStatus.cancelled)
                row.finished_at = time.time()
                add_event(s, row.id, f"Job cancelled by {actor}{note}")
            status = row.status

        await self.update(job_id, apply)
        log.info("job %s cancelled by %s", job_id, actor)
        return status
