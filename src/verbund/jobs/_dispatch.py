"""Moving jobs along: validate files, place, submit, watch, collect, register.

One pass (:meth:`Dispatcher.advance`) looks at one job and takes at most one step; the
job service calls it for every unfinished job each poll interval. Every step is written
to the store before the next starts, so a restarted access point carries on from the
store and the runners (job ids at the sites are persisted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from verbund.accounting import UsageRecord
from verbund.config import DataClass, FederationConfig, InstitutionConfig
from verbund.errors import NotFound, RunnerError
from verbund.federation import Federation
from verbund.jobs._events import add_event, from_recipe_line
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._models import FineTunedModel, ModelRegistry
from verbund.jobs._placement import Placement, SiteSlot, place
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._runner import JobSpec, Resources, Runner, RunPhase, RunState
from verbund.jobs._serving import load_linear
from verbund.jobs._validate import file_problem
from verbund.policy import RequestPolicy, describe_exclusions
from verbund.store import Store, TrainingJobRow

log = logging.getLogger("verbund.jobs")

TERMINAL = ("succeeded", "failed", "cancelled")
ENDPOINT = {"fine_tune": "/v1/fine_tuning/jobs", "training": "/v1/training/jobs"}
CANCEL_RETRY_SECONDS = 5.0


@dataclass
class Dispatcher:
    config: FederationConfig
    store: Store
    federation: Federation
    runners: dict[str, Runner]
    files: TrainingFileSource
    recipes: RecipeBook
    models: ModelRegistry
    models_dir: Path
    institution: Callable[[str], InstitutionConfig | None]
    record_usage: Callable[[UsageRecord], None]
    _waiting: dict[str, str] = field(default_factory=dict)  # job -> last "waiting" message
    _cancel_sent: dict[str, float] = field(default_factory=dict)

    # -- placement -------------------------------------------------------------------

    async def slots(self) -> list[SiteSlot]:
        async with self.store.session() as s:
            active = (
                (
                    await s.execute(
                        select(TrainingJobRow).where(
                            TrainingJobRow.site.is_not(None),
                            TrainingJobRow.runner_done.is_(False),
                        )
                    )
                )
                .scalars()
                .all()
            )
        out = []
        for sc in self.config.sites:
            rc = sc.runner
            runner = self.runners.get(sc.name)
            if rc is None or runner is None:
                continue
            here = [j for j in active if j.site == sc.name]
            running = [j for j in here if j.status == "running" or j.runner == "local"]
            queued = sum(1 for j in here if j.status == "queued")
            with contextlib.suppress(RunnerError):  # an unreachable site counts its own only
                queued = max(queued, await runner.pending())
            out.append(
                SiteSlot(
                    name=sc.name,
                    region=sc.region,
                    jurisdiction=sc.jurisdiction,
                    max_data_class=sc.max_data_class,
                    state=self.federation.sites[sc.name].state,
                    runner=rc.kind,
                    offer=Resources(
                        cpus=rc.cpus,
                        memory_mb=rc.memory_mb,
                        gpus=rc.gpus,
                        gpu_type=rc.gpu_type,
                        time_limit_minutes=rc.max_time_minutes,
                    ),
                    used_cpus=sum(int(j.resources.get("cpus", 1)) for j in running),
                    used_memory_mb=sum(int(j.resources.get("memory_mb", 0)) for j in running),
                    used_gpus=sum(int(j.resources.get("gpus", 0)) for j in running),
                    queued=queued,
                    certifications=tuple(sc.certifications),
                )
            )
        return out

    async def placement(
        self, institution: InstitutionConfig, data_class: DataClass, demand: Resources
    ) -> Placement:
        policy = RequestPolicy.for_institution(institution, data_class)
        return place(
            policy,
            demand,
            await self.slots(),
            home_region=institution.home_region,
            home_site=self.federation.home_site,
        )

    # -- one step for one job ----------------------------------------------------------

    async def advance(self, job_id: str) -> None:
        async with self.store.session() as s:
            row = await s.get(TrainingJobRow, job_id)
        if row is None:
            return
        if row.status == "validating_files":
            await self._validate(row)
        elif row.site is not None and row.runner_job_id is None and not row.runner_done:
            await self._recover_handle(row)
        elif row.status == "queued" and row.site is None:
            await self._place_and_submit(row)
        elif row.runner_job_id is not None and not row.runner_done:
            await self._poll(row)

    async def _update(
        self, job_id: str, apply: Callable[[AsyncSession, TrainingJobRow], None]
    ) -> None:
        async with self.store.session() as s, s.begin():
            row = await s.get(TrainingJobRow, job_id, with_for_update=True)
            if row is not None:
                apply(s, row)

    async def fail(self, job_id: str, code: str, message: str, param: str | None = None) -> None:
        def apply(s: AsyncSession, row: TrainingJobRow) -> None:
            row.status = "failed"
            row.error = {"code": code, "message": message, "param": param}
            row.finished_at = row.finished_at or time.time()
            add_event(s, row.id, f"Job failed: {message}", level="error")

        await self._update(job_id, apply)
        log.info("job %s failed (%s)", job_id, code)

    async def _validate(self, row: TrainingJobRow) -> None:
        recipe = self.recipes.recipes.get(row.recipe)
        if recipe is None:
            await self.fail(
                row.id, "unknown_recipe", f"The recipe {row.recipe} is no longer registered."
            )
            return
        label = str(row.params.get("label_column", "label"))
        for param, file_id in (
            ("training_file", row.training_file),
            ("validation_file", row.validation_file),
        ):
            if file_id is None:
                continue
            try:
                f = await self.files.open(row.institution_id, file_id)
            except NotFound:
                await self.fail(
                    row.id, "invalid_file", f"The file {file_id} no longer exists.", param
                )
                return
            if f.size > self.config.training.max_file_bytes:
                await self.fail(
                    row.id,
                    "invalid_file",
                    f"The file {file_id} exceeds {self.config.training.max_file_bytes} bytes.",
                    param,
                )
                return
            problem = await asyncio.to_thread(file_problem, f.path, recipe.data, label)
            if problem is not None:
                await self.fail(row.id, "invalid_file", f"{file_id}: {problem}", param)
                return

        def apply(s: AsyncSession, r: TrainingJobRow) -> None:
            if r.status == "validating_files":
                r.status = "queued"
                add_event(s, r.id, "Files validated, moving job to queued state")

        await self._update(row.id, apply)

    async def _place_and_submit(self, row: TrainingJobRow) -> None:
        inst = self.institution(row.institution_id)
        if inst is None:
            await self.fail(row.id, "institution_removed", "The institution is no longer a member.")
            return
        if row.recipe not in self.recipes.recipes:
            await self.fail(row.id, "unknown_recipe", f"The recipe {row.recipe} is not registered.")
            return
        demand = Resources(**row.resources)
        p = await self.placement(inst, DataClass(row.data_class), demand)
        if p.site is None:
            if not p.possible:
                why = describe_exclusions({**p.excluded, **p.unfit}, [])
                await self.fail(row.id, "no_site", f"No site may run this job any more: {why}")
                return
            waiting = "Waiting for a site: " + describe_exclusions(p.waiting, [])
            if self._waiting.get(row.id) != waiting:
                self._waiting[row.id] = waiting
                await self._update(row.id, lambda s, r: add_event(s, r.id, waiting))
            return
        self._waiting.pop(row.id, None)
        site, runner = p.site, self.runners[p.site]

        def choose(s: AsyncSession, r: TrainingJobRow) -> None:
            r.site, r.runner = site, runner.kind

        await self._update(row.id, choose)  # before submitting: a crash now is recoverable
        try:
            spec = await self._spec(row)
            handle = await runner.submit(spec)
        except (RunnerError, NotFound) as exc:
            message = str(exc) if isinstance(exc, RunnerError) else exc.message
            attempts = row.submit_attempts + 1

            def retry(s: AsyncSession, r: TrainingJobRow) -> None:
                r.site, r.runner, r.submit_attempts = None, None, attempts
                add_event(s, r.id, f"Submitting to {site} failed: {message}", level="warn")

            await self._update(row.id, retry)
            if attempts >= self.config.training.submit_attempts:
                await self.fail(row.id, "site_unavailable", f"Could not submit the job: {message}")
            return

        def submitted(s: AsyncSession, r: TrainingJobRow) -> None:
            r.runner_job_id = handle
            add_event(
                s,
                r.id,
                f"Job placed at site {site} ({runner.kind} runner, job {handle.split(':')[0]})",
                data={"site": site, "runner": runner.kind},
            )

        await self._update(row.id, submitted)
        log.info("job %s submitted to %s (%s %s)", row.id, site, runner.kind, handle)

    async def _spec(self, row: TrainingJobRow) -> JobSpec:
        recipe = self.recipes.get(row.recipe)
        inputs = {"training": (await self.files.open(row.institution_id, row.training_file)).path}
        if row.validation_file:
            inputs["validation"] = (
                await self.files.open(row.institution_id, row.validation_file)
            ).path
        return JobSpec(
            job_id=row.id,
            recipe_script=recipe.script,
            support=recipe.support,
            inputs=inputs,
            params={**row.params, "seed": row.seed},
            resources=Resources(**row.resources),
        )

    async def _recover_handle(self, row: TrainingJobRow) -> None:
        """Placed but no runner id stored: the access point died while submitting."""
        runner = self.runners.get(row.site or "")
        handle = None
        if runner is not None:
            try:
                handle = await runner.find(row.id)
            except RunnerError:
                return  # ask again next time

        def apply(s: AsyncSession, r: TrainingJobRow) -> None:
            if handle is None and r.status in TERMINAL:
                r.runner_done = True  # cancelled before it ever started
            elif handle is None:
                r.site, r.runner = None, None  # never started: place it again
            else:
                r.runner_job_id = handle
                add_event(s, r.id, f"Job found again at site {r.site} after a restart")

        await self._update(row.id, apply)

    async def _poll(self, row: TrainingJobRow) -> None:
        runner = self.runners.get(row.site or "")
        if runner is None:
            await self.fail(row.id, "site_removed", f"The site {row.site} no longer runs jobs.")
            await self._update(row.id, lambda s, r: setattr(r, "runner_done", True))
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
            if r.status in TERMINAL:
                return
            if state.phase is RunPhase.running and r.status == "queued":
                r.status = "running"
                r.started_at = state.started_at or time.time()
                kind = "Fine-tuning" if r.kind == "fine_tune" else "Training"
                add_event(s, r.id, f"{kind} job started")
            elif state.phase is RunPhase.pending and r.status == "running":
                r.status = "queued"  # requeued by the site

        await self._update(row.id, progress)
        if state.phase.done:
            await self._finish(row.id, state)

    async def _finish(self, job_id: str, state: RunState) -> None:
        async with self.store.session() as s:
            row = await s.get(TrainingJobRow, job_id)
        if row is None:
            return
        artifacts: dict[str, Any] | None = None
        phase, reason = state.phase, state.reason
        if phase is RunPhase.succeeded and not row.cancel_requested:
            try:
                artifacts = await self._collect(row)
            except (RunnerError, OSError, ValueError) as exc:
                phase, reason = RunPhase.failed, f"the job's artifacts are unusable: {exc}"
        res = Resources(**row.resources)
        wall = state.wall_seconds
        if not wall and state.started_at and state.finished_at:
            wall = max(0.0, state.finished_at - state.started_at)
        if row.status in TERMINAL:
            status = row.status  # cancelled by the user: the job stays cancelled
        elif row.cancel_requested or phase is RunPhase.cancelled:
            status = "cancelled"
        elif phase is RunPhase.succeeded and artifacts is not None:
            status = "succeeded"
        else:
            status = "failed"
        finished = row.finished_at or state.finished_at or time.time()
        row.status, row.finished_at = status, finished
        row.cpu_seconds, row.gpu_seconds = res.cpus * wall, res.gpus * wall
        # usage first (its id makes a repeat harmless), then the job: a crash between the
        # two repeats this step after the restart and loses nothing
        self._record(row, wall)

        def apply(s: AsyncSession, r: TrainingJobRow) -> None:
            r.runner_done = True
            r.cpu_seconds, r.gpu_seconds = row.cpu_seconds, row.gpu_seconds
            r.started_at = r.started_at or state.started_at
            if r.status in TERMINAL:
                return
            r.status, r.finished_at = status, finished
            if status == "cancelled":
                add_event(s, r.id, "Job cancelled at the site")
            elif status == "succeeded":
                r.result = artifacts
                add_event(s, r.id, f"New fine-tuned model created: {r.fine_tuned_model}")
                add_event(s, r.id, "The job has successfully completed")
            else:
                r.error = {"code": "job_failed", "message": reason or "failed", "param": None}
                add_event(s, r.id, f"Job failed: {reason or 'failed'}", level="error")

        await self._update(job_id, apply)
        async with self.store.session() as s:
            done = await s.get(TrainingJobRow, job_id)
        if done is not None and done.status == "succeeded" and done.fine_tuned_model:
            self.register(done)
        self._cancel_sent.pop(job_id, None)
        log.info("job %s ended: %s", job_id, status)

    async def _collect(self, row: TrainingJobRow) -> dict[str, Any]:
        runner = self.runners[row.site or ""]
        dest = self.models_dir / row.id
        dest.parent.mkdir(parents=True, exist_ok=True)
        await runner.collect(row.id, dest)
        recipe = self.recipes.recipes.get(row.recipe)

        def check() -> dict[str, Any]:
            summary: dict[str, Any] = {}
            if (dest / "summary.json").exists():
                loaded = json.loads((dest / "summary.json").read_text())
                summary = loaded if isinstance(loaded, dict) else {}
            if recipe is not None and recipe.servable:
                load_linear(json.loads((dest / "model.json").read_text()))
            return summary

        summary = await asyncio.to_thread(check)
        servable = recipe is not None and recipe.servable
        return {**summary, "artifacts": str(dest), "servable": servable}

    def _record(self, row: TrainingJobRow, wall: float) -> None:
        self.record_usage(
            UsageRecord(
                id=f"job-{row.id}",
                request_id=row.id,
                access_point=row.access_point,
                institution_id=row.institution_id,
                key_id=row.key_id,
                endpoint=ENDPOINT.get(row.kind, "/v1/training/jobs"),
                model=row.fine_tuned_model or row.model,
                site=row.site or "",
                backend=f"runner:{row.runner or ''}",
                status={"succeeded": "ok", "failed": "error"}.get(row.status, "incomplete"),
                http_status=200,
                latency_ms=wall * 1000.0,
                priority="batch",
                cpu_seconds=row.cpu_seconds,
                gpu_seconds=row.gpu_seconds,
                ts=row.finished_at or time.time(),
            )
        )

    def register(self, row: TrainingJobRow) -> None:
        path = self.models_dir / row.id
        if not row.fine_tuned_model or not path.is_dir():
            return
        self.models.add(
            FineTunedModel(
                name=row.fine_tuned_model,
                institution=row.institution_id,
                job_id=row.id,
                base=row.model,
                recipe=row.recipe,
                path=path,
                created_at=row.finished_at or row.created_at,
                servable=bool((row.result or {}).get("servable")),
            )
        )
