"""Moving a site's jobs along: validate files, submit, watch, finish.

This runs in the site agent. One pass (:meth:`Dispatcher.advance`) looks at one job and
takes at most one step; the site's job service calls it for every unfinished job each
poll interval. The steps themselves live with their concepts: the site's capacity in
:mod:`._slots`, submission in :mod:`._submit`, status changes in :mod:`._status`, the
trained model in :mod:`._artefacts`. Every step is written to the agent's store before
the next starts (:mod:`._rows`), so a restarted agent carries on from its store and its
runner (job ids at the runner are persisted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from verbund.accounting import UsageRecord
from verbund.config import TrainingConfig
from verbund.errors import RunnerError
from verbund.jobs._artefacts import Artefacts
from verbund.jobs._events import add_event, from_recipe_line
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import Resources, Runner, RunPhase, RunState
from verbund.jobs._status import TERMINAL, JobStatus, final_status, move
from verbund.jobs._submit import Submitter
from verbund.jobs._usage import job_usage
from verbund.jobs._validate import job_problem
from verbund.store import TrainingJobRow

log = logging.getLogger("verbund.jobs")

CANCEL_RETRY_SECONDS = 5.0


@dataclass
class Dispatcher:
    training: TrainingConfig
    rows: JobRows
    submitter: Submitter
    artefacts: Artefacts
    files: TrainingFileSource
    recipes: RecipeBook
    record_usage: Callable[[UsageRecord], None]
    _cancel_sent: dict[str, float] = field(default_factory=dict)

    @property
    def runners(self) -> dict[str, Runner]:
        return self.submitter.runners

    async def advance(self, job_id: str) -> None:
        """Take the one step the job's row says is next, if any."""
        row = await self.rows.get(job_id)
        if row is None:
            return
        if row.status == JobStatus.validating_files:
            await self._validate(row)
        elif row.site is not None and row.runner_job_id is None and not row.runner_done:
            await self.submitter.recover(row)
        elif row.status == JobStatus.queued and row.site is None:
            await self.submitter.place_and_submit(row)
        elif row.runner_job_id is not None and not row.runner_done:
            await self._poll(row)

    async def _validate(self, row: TrainingJobRow) -> None:
        max_bytes = self.training.max_file_bytes
        problem = await job_problem(row, self.files, self.recipes, max_bytes)
        if problem is not None:
            await self.rows.fail(row.id, problem.code, problem.message, problem.param)
            return

        def apply(s: AsyncSession, r: TrainingJobRow) -> None:
            if r.status == JobStatus.validating_files:
                move(r, JobStatus.queued)
                add_event(s, r.id, "Files validated, moving job to queued state")

        await self.rows.update(row.id, apply)

    async def _poll(self, row: TrainingJobRow) -> None:
        """Send a pending cancel, read new metrics and the job's state at its site."""
        runner = self.runners.get(row.site or "")
        if runner is None:
            await self.rows.fail(
                row.id, "site_removed", f"The site {row.site} no longer runs jobs."
            )
            await self.rows.update(row.id, lambda s, r: setattr(r, "runner_done", True))
            return
        handle = row.runner_job_id or ""
        try:
            if (
                row.cancel_requested
                and time.monotonic() - self._cancel_sent.get(row.id, 0.0) > CANCEL_RETRY_SECONDS
            ):
                self._cancel_sent[row.id] = time.monotonic()
                await runner.cancel(row.id, handle)
            state = await runner.status(row.id, handle)
            lines, offset = await runner.events(row.id, row.metrics_offset)
        except RunnerError as exc:
            log.warning("job %s: cannot reach its runner at %s: %s", row.id, row.site, exc)
            return

        def progress(s: AsyncSession, r: TrainingJobRow) -> None:
            for line in lines:
                kind, level, message, data = from_recipe_line(line)
                add_event(s, r.id, message, level=level, type=kind, data=data)
                if kind == "metrics":
                    r.last_metrics = data
            r.metrics_offset = offset
            if state.phase is RunPhase.running and r.status == JobStatus.queued:
                move(r, JobStatus.running)
                r.started_at = state.started_at or time.time()
                kind = "Fine-tuning" if r.kind == "fine_tune" else "Training"
                add_event(s, r.id, f"{kind} job started")
            elif state.phase is RunPhase.pending and r.status == JobStatus.running:
                move(r, JobStatus.queued)  # requeued by the site

        await self.rows.update(row.id, progress)
        if state.phase.done:
            await self._finish(row.id, runner, state)

    async def _finish(self, job_id: str, runner: Runner, state: RunState) -> None:
        """The runner is done: collect the model, bill the time, end the job."""
        row = await self.rows.get(job_id)
        if row is None:
            return
        artifacts: dict[str, Any] | None = None
        reason = state.reason
        if state.phase is RunPhase.succeeded and not row.cancel_requested:
            try:
                artifacts = await self.artefacts.collect(row, runner)
            except (RunnerError, OSError, ValueError) as exc:
                reason = f"the job's artifacts are unusable: {exc}"
        status = final_status(
            row.status,
            cancel_requested=row.cancel_requested,
            phase=state.phase,
            collected=artifacts is not None,
        )
        res = Resources(**row.resources)
        wall = state.wall_seconds
        if not wall and state.started_at and state.finished_at:
            wall = max(0.0, state.finished_at - state.started_at)
        cpu, gpu = res.cpus * wall, res.gpus * wall
        finished = row.finished_at or state.finished_at or time.time()
        # usage first (its id makes a repeat harmless), then the job: a crash between the
        # two repeats this step after the restart and loses nothing
        self.record_usage(
            job_usage(
                row,
                status,
                wall_seconds=wall,
                cpu_seconds=cpu,
                gpu_seconds=gpu,
                finished_at=finished,
            )
        )

        def apply(s: AsyncSession, r: TrainingJobRow) -> None:
            r.runner_done = True
            r.cpu_seconds, r.gpu_seconds = cpu, gpu
            r.started_at = r.started_at or state.started_at
            if r.status in TERMINAL:
                return
            move(r, status)
            r.finished_at = finished
            if status == JobStatus.cancelled:
                add_event(s, r.id, "Job cancelled at the site")
            elif status == JobStatus.succeeded:
                r.result = artifacts
                add_event(s, r.id, f"New fine-tuned model created: {r.fine_tuned_model}")
                add_event(s, r.id, "The job has successfully completed")
            else:
                r.error = {"code": "job_failed", "message": reason or "failed", "param": None}
                add_event(s, r.id, f"Job failed: {reason or 'failed'}", level="error")

        await self.rows.update(job_id, apply)
        done = await self.rows.get(job_id)
        if done is not None and done.status == JobStatus.succeeded and done.fine_tuned_model:
            self.artefacts.register(done)
        self._cancel_sent.pop(job_id, None)
        log.info("job %s ended: %s", job_id, status.value)
