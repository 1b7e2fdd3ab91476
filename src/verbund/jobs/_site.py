"""The training jobs of one site, run by its agent: accepted from access points, run on the
site's runner, watched, and their models kept and served here.

An access point places a job and hands it over with :meth:`SiteJobs.accept` (idempotent
by the job's id, so a handover repeated after a crash is harmless). From then on the
agent's store holds the job's truth: its status, its runner's id, its events, its
metrics and its artefacts. Access points read it back with :meth:`SiteJobs.changes`
(new events after the last one they have) and mirror it into the federation's store, so
any of them can list a job, and the last known state survives the agent being away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from verbund.config import DataClass, RunnerConfig, SiteState, TrainingConfig
from verbund.errors import BadRequest, ModelNotFound, NotFound, PermissionDenied, RunnerError
from verbund.files import LocalBlobStore
from verbund.jobs._artefacts import Artefacts
from verbund.jobs._dispatch import Dispatcher
from verbund.jobs._events import add_event
from verbund.jobs._files import TrainingFile
from verbund.jobs._local import LocalRunner
from verbund.jobs._loop import run_loop
from verbund.jobs._models import FineTunedModel, ModelRegistry
from verbund.jobs._placement import SiteSlot
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import Resources, Runner
from verbund.jobs._serving import Predictors
from verbund.jobs._slots import RunnerReport, site_slot
from verbund.jobs._slurm import SlurmRunner
from verbund.jobs._status import INITIAL, TERMINAL
from verbund.jobs._submit import Submitter
from verbund.store import Store, TrainingEventRow, TrainingJobRow

__all__ = ["BlobSource", "SiteFacts", "SiteJobs", "make_runner"]

log = logging.getLogger("verbund.jobs")

MAX_EVENTS_PER_SYNC = 500


def make_runner(site: str, rc: RunnerConfig, state_dir: Path) -> Runner:
    workdir = Path(rc.workdir) if rc.workdir else state_dir / "jobs" / site
    workdir.mkdir(parents=True, exist_ok=True)
    python = rc.python or sys.executable
    if rc.kind == "slurm":
        return SlurmRunner(site, workdir, python, rc.partition, rc.slurm_conf)
    return LocalRunner(site, workdir, python)


@dataclass(frozen=True, slots=True)
class SiteFacts:
    """What the site is, for its own checks (the agent's ``[site]``)."""

    name: str
    region: str = ""
    jurisdiction: str = ""
    max_data_class: DataClass = DataClass.internal
    certifications: tuple[str, ...] = ()


class BlobSource:
    """A job's files at the site: blobs in the agent's file store, by key.

    The access point hands over a job naming the blob keys of its inputs at this agent
    (its files uploaded here, or copied here before the handover); the key is what the
    site's job row holds as ``training_file``."""

    def __init__(self, blobs: LocalBlobStore) -> None:
        self._blobs = blobs

    async def open(self, institution: str, file_id: str) -> TrainingFile:
        try:
            path = self._blobs.local_path(file_id)
            size = path.stat().st_size
        except (ValueError, OSError):
            raise NotFound(f"No file with id '{file_id}'.", param="training_file") from None
        return TrainingFile(file_id, path, size)


class SiteJobs:
    def __init__(
        self,
        site: SiteFacts,
        runner_config: RunnerConfig | None,
        store: Store,
        state_dir: Path,
        blobs: LocalBlobStore,
        *,
        training: TrainingConfig | None = None,
        recipes: RecipeBook | None = None,
        runner: Runner | None = None,
        state: Callable[[], SiteState] = lambda: SiteState.active,
    ) -> None:
        self.site = site
        self.runner_config = runner_config
        self.store = store
        self.training = training or TrainingConfig()
        self.recipes = recipes or RecipeBook.builtin()
        self.models = ModelRegistry()
        self.predictors = Predictors()
        self.blobs = blobs
        self._state = state
        if runner is None and runner_config is not None:
            runner = make_runner(site.name, runner_config, state_dir)
        self.runner = runner
        runners = {site.name: runner} if runner is not None else {}
        self.rows = rows = JobRows(store)
        files = BlobSource(blobs)
        self.artefacts = Artefacts(state_dir / "models", self.recipes, self.models)
        self.dispatcher = Dispatcher(
            training=self.training,
            rows=rows,
            submitter=Submitter(
                training=self.training,
                rows=rows,
                runners=runners,
                slot=self.slot,
                files=files,
                recipes=self.recipes,
                base_models=dict(runner_config.base_models) if runner_config else {},
            ),
            artefacts=self.artefacts,
            files=files,
            recipes=self.recipes,
            record_usage=lambda record: None,  # the access points bill what they mirror
        )
        self._created = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- what the site offers ------------------------------------------------------------

    async def report(self, waiting: bool = True) -> RunnerReport | None:
        """The runner as access points place on it; None when the site runs no jobs.
        ``waiting``: count the jobs accepted but not yet started too (what access points
        must know); the site's own decision to start one counts the started ones only."""
        if self.runner_config is None or self.runner is None:
            return None
        async with self.store.session() as s:
            active = (
                (
                    await s.execute(
                        select(TrainingJobRow).where(
                            TrainingJobRow.runner_done.is_(False),
                            TrainingJobRow.status.not_in(TERMINAL),
                        )
                    )
                )
                .scalars()
                .all()
            )
        pending = 0
        with contextlib.suppress(RunnerError):
            pending = await self.runner.pending()
        placed = [j for j in active if waiting or j.site is not None]
        return RunnerReport.of(self.runner_config, placed, pending)

    async def slot(self) -> SiteSlot:
        report = await self.report(waiting=False)
        assert report is not None, "jobs are submitted only at a site with a runner"
        f = self.site
        return site_slot(
            name=f.name,
            region=f.region,
            jurisdiction=f.jurisdiction,
            max_data_class=f.max_data_class,
            certifications=f.certifications,
            state=self._state(),
            report=report,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the models of succeeded jobs; the loop reconciles the rest with the
        runner (jobs that ran on while the agent was down)."""
        for row in await self.rows.succeeded():
            self.artefacts.register(row)

    async def tick(self) -> int:
        """One step for every unfinished job of the site; how many."""
        ids = [row.id for row in await self.rows.unfinished(TrainingJobRow.site)]
        for job_id in ids:
            async with self._lock:
                try:
                    await self.dispatcher.advance(job_id)
                except Exception:  # the loop's boundary: one broken job must not stop the rest
                    log.exception("job %s: step failed; retrying next time", job_id)
        return len(ids)

    async def run(self) -> None:
        await run_loop(self.tick, self.training.poll_interval, self._created)

    async def aclose(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(RunnerError, OSError):
                await self.runner.aclose()

    # -- what access points ask --------------------------------------------------------------

    async def accept(self, spec: dict[str, Any], access_point: str) -> TrainingJobRow:
        """Take over a job an access point placed here; the same job again is no error.

        The site checks what it can itself (defence in depth against a misconfigured
        access point): it runs jobs at all, the data class is one it may hold, the
        recipe is one it knows, and the inputs are here."""
        if self.runner is None:
            raise BadRequest("This site runs no training jobs.", code="no_runner")
        try:
            data_class = DataClass(spec["data_class"])
            job_id = str(spec["id"])
            recipe = str(spec["recipe"])
            training_file = str(spec["training_file"])
            validation_file = spec.get("validation_file")
            resources = Resources(**spec["resources"]).as_dict()
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"Malformed job: {exc}", code="invalid_job") from None
        if data_class.rank > self.site.max_data_class.rank:
            raise PermissionDenied(
                f"This site holds data up to {self.site.max_data_class.value}, "
                f"not {data_class.value}.",
                code="data_class_refused",
            )
        if recipe not in self.recipes.recipes:
            raise BadRequest(f"This site has no recipe '{recipe}'.", code="unknown_recipe")
        async with self.store.session() as s, s.begin():
            existing = await s.get(TrainingJobRow, job_id)
            if existing is not None:
                return existing
            row = TrainingJobRow(
                id=job_id,
                kind=str(spec.get("kind", "training")),
                institution_id=str(spec["institution"]),
                key_id=str(spec.get("key_id", "")),
                access_point=access_point,
                recipe=recipe,
                model=str(spec.get("model", recipe)),
                training_file=training_file,
                validation_file=None if validation_file is None else str(validation_file),
                data_class=data_class.value,
                params=dict(spec.get("params") or {}),
                resources=resources,
                metadata_=None,
                suffix=str(spec.get("suffix", "")),
                seed=int(spec.get("seed", 0)),
                status=INITIAL,
                runner_done=False,
                cancel_requested=False,
                submit_attempts=0,
                metrics_offset=0,
                fine_tuned_model=spec.get("fine_tuned_model"),
                created_at=float(spec.get("created_at") or time.time()),
                cpu_seconds=0.0,
                gpu_seconds=0.0,
            )
            s.add(row)
            await s.flush()
            add_event(s, job_id, f"Job accepted at site {self.site.name} from {access_point}")
        self._created.set()
        log.info("job %s accepted from %s", job_id, access_point)
        return row

    async def get(self, job_id: str) -> TrainingJobRow:
        async with self.store.session() as s:
            row = await s.get(TrainingJobRow, job_id)
        if row is None:
            raise NotFound(f"No job with id '{job_id}' at this site.", code="job_not_found")
        return row

    async def changes(
        self, known: dict[str, int]
    ) -> list[tuple[TrainingJobRow, list[TrainingEventRow]]]:
        """The jobs asked for, each with its events after the first ``n`` (how many the
        caller has: a job's events only ever grow); unknown jobs are left out."""
        out: list[tuple[TrainingJobRow, list[TrainingEventRow]]] = []
        async with self.store.session() as s:
            rows: Sequence[TrainingJobRow] = (
                (await s.execute(select(TrainingJobRow).where(TrainingJobRow.id.in_(list(known)))))
                .scalars()
                .all()
            )
            for row in rows:
                q = (
                    select(TrainingEventRow)
                    .where(TrainingEventRow.job_id == row.id)
                    .order_by(TrainingEventRow.seq)
                    .offset(max(0, int(known[row.id])))
                    .limit(MAX_EVENTS_PER_SYNC)
                )
                out.append((row, list((await s.execute(q)).scalars().all())))
        return out

    async def cancel(self, job_id: str, actor: str) -> TrainingJobRow:
        async with self._lock:
            row = await self.get(job_id)
            if row.status in TERMINAL:
                return row
            sent = ""
            if row.runner_job_id and self.runner is not None:
                try:
                    await self.runner.cancel(row.id, row.runner_job_id)
                except RunnerError as exc:
                    sent = f" (the runner did not answer: {exc}; retrying)"
            await self.rows.cancel(job_id, actor, sent)
            return await self.get(job_id)

    async def erase(
        self, institution: str, keys: Sequence[str], job_ids: Sequence[str]
    ) -> dict[str, int]:
        """Erase what this site holds of the jobs of ``keys`` (of ``institution``) or
        named by the access point: running ones are cancelled, then their rows and
        events, their artefacts (trained models), their working folders and their staged
        input files go. Counts, for the access point's audit entry."""
        async with self.store.session() as s:
            q = select(TrainingJobRow).where(TrainingJobRow.institution_id == institution)
            rows = [
                r
                for r in (await s.execute(q)).scalars().all()
                if (r.key_id and r.key_id in keys) or r.id in job_ids
            ]
        out = {"jobs": 0, "artefacts": 0, "files": 0, "models": 0}
        for row in rows:
            if row.status not in TERMINAL:
                with contextlib.suppress(RunnerError, NotFound):
                    await self.cancel(row.id, "erasure")
            async with self._lock, self.store.session() as s, s.begin():
                await s.execute(delete(TrainingEventRow).where(TrainingEventRow.job_id == row.id))
                await s.execute(delete(TrainingJobRow).where(TrainingJobRow.id == row.id))
            out["jobs"] += 1
            out["models"] += self.models.forget_job(row.id)
            workdir = getattr(self.runner, "workdir", None)
            folders = [self.artefacts.models_dir / row.id]
            if isinstance(workdir, Path):
                folders.append(workdir / row.id)
            for folder in folders:
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                    out["artefacts"] += 1
            for key in (row.training_file, row.validation_file):
                if key and await self._drop_blob(key):
                    out["files"] += 1
        return out

    async def _drop_blob(self, key: str) -> bool:
        try:
            await self.blobs.size(key)
        except (KeyError, ValueError):
            return False
        await self.blobs.delete(key)
        return True

    def model(self, name: str, institution: str) -> FineTunedModel:
        """A succeeded job's servable model of this institution; 404 for anyone else."""
        found = self.models.get(name, institution)
        if found is None or not found.servable:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        return found
