"""Training jobs of one access point: the API's operations and the background loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import and_, or_, select

from verbund.accounting import UsageRecord
from verbund.config import FederationConfig, InstitutionConfig, SiteConfig
from verbund.errors import BadRequest, NotFound, RunnerError
from verbund.federation import Federation, UpstreamPool
from verbund.jobs._artefacts import Artefacts
from verbund.jobs._dispatch import Dispatcher
from verbund.jobs._events import add_event
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._llms import LanguageModels
from verbund.jobs._local import LocalRunner
from verbund.jobs._models import ModelRegistry
from verbund.jobs._newjob import NewJob, create_job
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import Runner
from verbund.jobs._serving import Predictors
from verbund.jobs._slots import SiteSlots
from verbund.jobs._slurm import SlurmRunner
from verbund.jobs._status import TERMINAL, JobStatus, move
from verbund.jobs._submit import Submitter
from verbund.store import STORE_FAILURES, Store, TrainingEventRow, TrainingJobRow

log = logging.getLogger("verbund.jobs")

MODEL_REFRESH_SECONDS = 10.0
IDLE_POLLS = 10  # with no job to step, the loop looks at the store this much less often


def make_runner(site: SiteConfig, state_dir: Path) -> Runner | None:
    rc = site.runner
    if rc is None:
        return None
    workdir = Path(rc.workdir) if rc.workdir else state_dir / "jobs" / site.name
    workdir.mkdir(parents=True, exist_ok=True)
    python = rc.python or sys.executable
    if rc.kind == "slurm":
        return SlurmRunner(site.name, workdir, python, rc.partition, rc.slurm_conf)
    return LocalRunner(site.name, workdir, python)


class JobService:
    def __init__(
        self,
        config: FederationConfig,
        store: Store,
        federation: Federation,
        files: TrainingFileSource,
        institution: Callable[[str], InstitutionConfig | None],
        record_usage: Callable[[UsageRecord], None],
        runners: dict[str, Runner] | None = None,
        recipes: RecipeBook | None = None,
        pool: UpstreamPool | None = None,
    ) -> None:
        state_dir = Path(config.gateway.state_dir)
        self.config = config
        self.store = store
        self.files = files
        self.recipes = recipes or RecipeBook.builtin()
        self.models = ModelRegistry()
        self.predictors = Predictors()
        self._created = asyncio.Event()  # a job was created here: step it now
        if runners is None:
            runners = {}
            for site in config.sites:
                runner = make_runner(site, state_dir)
                if runner is not None:
                    runners[site.name] = runner
        self.runners = runners
        models_dir = Path(config.training.models_dir or state_dir / "models")
        rows = JobRows(store)
        self.sites = SiteSlots(config, store, federation, runners)
        self.artefacts = Artefacts(models_dir, self.recipes, self.models)
        self.dispatcher = Dispatcher(
            config=config,
            rows=rows,
            submitter=Submitter(config, rows, self.sites, files, self.recipes, institution),
            artefacts=self.artefacts,
            files=files,
            recipes=self.recipes,
            record_usage=record_usage,
        )
        self._lock = asyncio.Lock()
        # fine-tuned language models: served by llama.cpp at their site, routed like any
        self.llms = LanguageModels(config, federation, pool, runners, self.models)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Re-register the models of succeeded jobs; the loop then reconciles the rest."""
        await self.load_models()

    async def load_models(self) -> None:
        """Register every succeeded job's model whose artifacts this access point can read
        (with a shared ``models_dir``, also those other access points produced)."""
        async with self.store.session() as s:
            rows = (
                await s.execute(
                    select(TrainingJobRow).where(
                        TrainingJobRow.status == JobStatus.succeeded,
                        TrainingJobRow.fine_tuned_model.is_not(None),
                    )
                )
            ).scalars()
            for row in rows:
                self.artefacts.register(row)

    async def tick(self) -> int:
        """One step for every unfinished job this access point dispatched; how many."""
        async with self.store.session() as s:
            ids = (
                (
                    await s.execute(
                        select(TrainingJobRow.id)
                        .where(
                            TrainingJobRow.access_point == self.config.gateway.name,
                            or_(
                                TrainingJobRow.status.not_in(TERMINAL),
                                and_(
                                    TrainingJobRow.site.is_not(None),
                                    TrainingJobRow.runner_done.is_(False),
                                ),
                            ),
                        )
                        .order_by(TrainingJobRow.created_at)
                    )
                )
                .scalars()
                .all()
            )
        for job_id in ids:
            async with self._lock:
                try:
                    await self.dispatcher.advance(job_id)
                except Exception:  # the loop's boundary: one broken job must not stop the rest
                    log.exception("job %s: step failed; retrying next time", job_id)
        await self.llms.sync()
        return len(ids)

    async def run(self) -> None:
        """Step the jobs every ``poll_interval`` while there are any; with none, wait for
        the next job created here (only this access point dispatches its jobs), looking
        at the store every ``IDLE_POLLS`` intervals all the same. An idle access point
        should cost next to nothing."""
        refreshed = time.monotonic()
        interval = self.config.training.poll_interval
        while True:
            active = 1
            self._created.clear()
            try:
                active = await self.tick()
                if time.monotonic() - refreshed > MODEL_REFRESH_SECONDS:
                    refreshed = time.monotonic()
                    await self.load_models()
            except STORE_FAILURES as exc:  # store unreachable: try again later
                log.warning("job loop: %s", type(exc).__name__)
            wait = interval if active else interval * IDLE_POLLS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._created.wait(), wait)

    async def aclose(self) -> None:
        await self.llms.aclose()
        for runner in self.runners.values():
            with contextlib.suppress(RunnerError, OSError):
                await runner.aclose()

    # -- API operations ----------------------------------------------------------------

    async def create(self, new: NewJob) -> TrainingJobRow:
        row = await create_job(
            new, self.store, self.files, self.sites, self.config.gateway.name, bool(self.runners)
        )
        self._created.set()  # the loop steps it at once, idle or not
        return row

    async def get(
        self, job_id: str, institution: str | None, kind: str | None = None
    ) -> TrainingJobRow:
        async with self.store.session() as s:
            row = await s.get(TrainingJobRow, job_id)
        if (
            row is None
            or (institution is not None and row.institution_id != institution)
            or (kind is not None and row.kind != kind)
        ):
            raise NotFound(f"No job with id '{job_id}'.", code="job_not_found", param="job_id")
        return row

    async def list_jobs(
        self,
        institution: str | None,
        kind: str | None = None,
        after: str | None = None,
        limit: int = 20,
        status: str | None = None,
    ) -> tuple[list[TrainingJobRow], bool]:
        q = select(TrainingJobRow)
        if institution is not None:
            q = q.where(TrainingJobRow.institution_id == institution)
        if kind is not None:
            q = q.where(TrainingJobRow.kind == kind)
        if status is not None:
            q = q.where(TrainingJobRow.status == status)
        if after:
            cursor = await self.get(after, institution)
            q = q.where(
                or_(
                    TrainingJobRow.created_at < cursor.created_at,
                    and_(
                        TrainingJobRow.created_at == cursor.created_at,
                        TrainingJobRow.id < cursor.id,
                    ),
                )
            )
        q = q.order_by(TrainingJobRow.created_at.desc(), TrainingJobRow.id.desc()).limit(limit + 1)
        async with self.store.session() as s:
            rows = list((await s.execute(q)).scalars().all())
        return rows[:limit], len(rows) > limit

    async def events(
        self, job_id: str, institution: str | None, after: str | None = None, limit: int = 20
    ) -> tuple[list[TrainingEventRow], bool]:
        """Newest first, as OpenAI lists them; ``after`` pages towards older events."""
        await self.get(job_id, institution)
        q = select(TrainingEventRow).where(TrainingEventRow.job_id == job_id)
        async with self.store.session() as s:
            if after:
                seq = await s.scalar(
                    select(TrainingEventRow.seq).where(
                        TrainingEventRow.id == after, TrainingEventRow.job_id == job_id
                    )
                )
                if seq is None:
                    raise NotFound(f"No event with id '{after}'.", param="after")
                q = q.where(TrainingEventRow.seq < seq)
            q = q.order_by(TrainingEventRow.seq.desc()).limit(limit + 1)
            rows = list((await s.execute(q)).scalars().all())
        return rows[:limit], len(rows) > limit

    async def cancel(self, job_id: str, institution: str | None, actor: str) -> TrainingJobRow:
        async with self._lock:
            row = await self.get(job_id, institution)
            if row.status == JobStatus.cancelled:
                return row
            if row.status in TERMINAL:
                raise _not_cancellable(row.status)
            runner = self.runners.get(row.site or "")
            sent = ""
            if row.runner_job_id and runner is not None:
                try:
                    await runner.cancel(row.id, row.runner_job_id)
                except RunnerError as exc:
                    sent = f" (the site did not answer: {exc}; retrying)"
            async with self.store.session() as s, s.begin():
                fresh = await s.get(TrainingJobRow, job_id, with_for_update=True)
                assert fresh is not None
                if fresh.status not in TERMINAL:
                    fresh.cancel_requested = True
                    move(fresh, JobStatus.cancelled)
                    fresh.finished_at = time.time()
                    add_event(s, job_id, f"Job cancelled by {actor}{sent}")
                elif fresh.status != JobStatus.cancelled:  # ended meanwhile elsewhere
                    raise _not_cancellable(fresh.status)
            log.info("job %s cancelled by %s", job_id, actor)
            return await self.get(job_id, institution)


def _not_cancellable(status: str) -> BadRequest:
    return BadRequest(
        f"The job has {status} already and cannot be cancelled.",
        code="job_not_cancellable",
        param="job_id",
    )
