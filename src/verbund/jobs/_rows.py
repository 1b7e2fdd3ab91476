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

from sqlalchemy.ext.asyncio import AsyncSession

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
