"""Training jobs at the access point: the API's operations and the loop that carries jobs
to the sites' agents.

The access point validates a job, places it (policy, resources, the site holding its
data) and hands it to that site's agent (:mod:`._handover`), which runs it on its runner
and keeps its artefacts (:class:`~verbund.jobs.SiteJobs`). The federation's store keeps
a mirror of every job, so any access point lists, watches and cancels any job, and a job
at an agent that does not answer shows its last known state with a note. Models that
jobs trained are served at their site: the access point relays OIP v2 inference to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import and_, or_, select

from verbund.accounting import UsageRecord
from verbund.config import DataClass, FederationConfig, InstitutionConfig
from verbund.errors import (
    BadRequest,
    ModelNotFound,
    NotFound,
    PolicyViolation,
    SiteAgentUnavailable,
)
from verbund.federation import Federation
from verbund.jobs._artefacts import model_of
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._handover import HANDED_OVER, Handover
from verbund.jobs._link import SiteLink
from verbund.jobs._loop import run_loop
from verbund.jobs._models import FineTunedModel, ModelRegistry
from verbund.jobs._newjob import NewJob, create_job
from verbund.jobs._placement import Placement, SiteSlot, place
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import Resources
from verbund.jobs._slots import site_slot
from verbund.jobs._status import TERMINAL, JobStatus
from verbund.policy import RequestPolicy, exclusion_reason
from verbund.store import Store, TrainingEventRow, TrainingJobRow

log = logging.getLogger("verbund.jobs")

MODEL_REFRESH_SECONDS = 10.0


class JobService:
    def __init__(
        self,
        config: FederationConfig,
        store: Store,
        federation: Federation,
        files: TrainingFileSource,
        institution: Callable[[str], InstitutionConfig | None],
        record_usage: Callable[[UsageRecord], None],
        links: Mapping[str, SiteLink],
        recipes: RecipeBook | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.federation = federation
        self.files = files
        self.links = links
        self.recipes = recipes or RecipeBook.builtin()
        self.models = ModelRegistry()
        self._created = asyncio.Event()
        self.rows = JobRows(store)
        self.handover = Handover(
            access_point=config.gateway.name,
            rows=self.rows,
            links=links,
            files=files,
            recipes=self.recipes,
            institution=institution,
            placement=self.placement,
            record_usage=record_usage,
        )

    # -- placement -----------------------------------------------------------------------

    async def slots(self) -> list[SiteSlot]:
        """Every site whose agent runs jobs, as placement sees it now (an agent that does
        not answer is left out: no job is placed where it cannot be handed over)."""

        async def one(name: str, link: SiteLink) -> SiteSlot | None:
            sc, site = self.config.site(name), self.federation.sites.get(name)
            if sc is None or site is None:
                return None
            try:
                report = await link.report()
            except Exception as exc:  # noqa: BLE001 - any failure of one agent: leave it out
                log.debug("runner report of %s: %s", name, exc)
                return None
            if report is None:
                return None
            return site_slot(
                name=name,
                region=sc.region,
                jurisdiction=sc.jurisdiction,
                max_data_class=sc.max_data_class,
                certifications=sc.certifications,
                state=site.state,
                report=report,
            )

        found = await asyncio.gather(*(one(n, link) for n, link in self.links.items()))
        return [s for s in found if s is not None]

    async def site_models(self) -> frozenset[str]:
        """The language models the sites' runners list as base models (``base_models``)."""
        return frozenset(m for slot in await self.slots() for m in slot.base_models)

    async def placement(
        self,
        institution: InstitutionConfig,
        data_class: DataClass,
        demand: Resources,
        base_model: str = "",
        data_site: str = "",
        slots: list[SiteSlot] | None = None,
    ) -> Placement:
        """Where a job would go now (``slots``: the sites as just asked, else asked now).
        Data at a site's agent stays there: the job runs at that site or waits for it
        (files move agent to agent only by a new upload)."""
        policy = RequestPolicy.for_institution(institution, data_class)
        if data_site:
            allowed = policy.allowed_sites
            if allowed and data_site not in allowed:
                allowed = frozenset({"-"})
            else:
                allowed = frozenset({data_site})
            policy = RequestPolicy(
                data_class=policy.data_class,
                allowed_sites=allowed,
                allowed_regions=policy.allowed_regions,
                allowed_jurisdictions=policy.allowed_jurisdictions,
                required_certifications=policy.required_certifications,
            )
        return place(
            policy,
            demand,
            await self.slots() if slots is None else slots,
            home_region=institution.home_region,
            home_site=self.federation.home_site,
            base_model=base_model,
            data_site=data_site,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load_models()

    async def load_models(self) -> None:
        """Know every succeeded job's model (whichever access point saw it succeed)."""
        for row in await self.rows.succeeded():
            model = model_of(row, path=None) if row.site else None
            if model is not None:
                self.models.add(model)

    async def tick(self) -> int:
        """One step for every unfinished job of the federation (whoever created it)."""
        rows = await self.rows.unfinished(TrainingJobRow.runner_job_id)
        following: dict[str, list[TrainingJobRow]] = {}
        for row in rows:
            try:
                if row.site is None and row.status not in TERMINAL:
                    await self.handover.place(row)
                elif row.site is not None and row.runner_job_id is None:
                    if row.status not in TERMINAL:
                        await self.handover.hand_over(row)
                elif row.site is not None:
                    following.setdefault(row.site, []).append(row)
            except Exception:  # the loop's boundary: one broken job must not stop the rest
                log.exception("job %s: step failed; retrying next time", row.id)
        ended = 0
        for site, site_rows in following.items():
            try:
                ended += await self.handover.follow_site(site, site_rows)
            except Exception:  # the loop's boundary, per site
                log.exception("jobs at %s: following failed; retrying next time", site)
        if ended:
            await self.load_models()
        return len(rows)

    async def run(self) -> None:
        refreshed = time.monotonic()

        async def step() -> int:
            nonlocal refreshed
            active = await self.tick()
            if time.monotonic() - refreshed > MODEL_REFRESH_SECONDS:
                refreshed = time.monotonic()
                await self.load_models()  # models other access points saw succeed
            return active

        await run_loop(step, self.config.training.poll_interval, self._created)

    async def aclose(self) -> None:
        return None

    # -- API operations --------------------------------------------------------------

    async def create(self, new: NewJob) -> TrainingJobRow:
        inst, res = new.institution, new.resources
        base = new.recipe.base_model(new.params)
        slots = await self.slots()  # once: each asks every agent (and its runner)
        if new.recipe.site_model:
            listed = sorted({m for slot in slots for m in slot.base_models})
            if base not in listed:
                raise BadRequest(
                    "'params.base_model' must name a base model a site lists; listed: "
                    f"{', '.join(listed) or 'none'}.",
                    code="invalid_value",
                    param="params.base_model",
                )

        async def where(data_class: DataClass, data_site: str) -> Placement:
            return await self.placement(inst, data_class, res, base, data_site, slots)

        row = await create_job(
            new, self.store, self.files, where, self.config.gateway.name, bool(self.links)
        )
        self._created.set()
        return row

    def note(self, row: TrainingJobRow) -> str | None:
        """Why the job's state may be old: its site's agent has not answered lately."""
        since = self.handover.unreachable.get(row.site or "")
        if since is None or (row.status in TERMINAL and row.runner_done):
            return None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        return f"The agent of site {row.site} has not answered since {when}: last known state."

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
        row = await self.get(job_id, institution)
        if row.status == JobStatus.cancelled:
            return row
        if row.status in TERMINAL:
            raise _not_cancellable(row.status)
        link = self.links.get(row.site or "") if row.runner_job_id == HANDED_OVER else None
        sent = ""
        if link is not None:
            try:
                state = await link.cancel(job_id, actor)
            except SiteAgentUnavailable as exc:
                sent = f" (the site did not answer: {exc.message}; retrying)"
            else:
                if state["status"] in TERMINAL and state["status"] != JobStatus.cancelled:
                    raise _not_cancellable(state["status"])
        status = await self.rows.cancel(job_id, actor, sent)
        if status is not None and status != JobStatus.cancelled:  # ended meanwhile
            raise _not_cancellable(status)
        return await self.get(job_id, institution)

    # -- models trained at the sites ---------------------------------------------------

    def model(
        self, name: str, institution: InstitutionConfig, data_class: DataClass
    ) -> FineTunedModel:
        """The institution's servable ``ft:`` model, if its site may take this request."""
        model = self.models.get(name, institution.id)
        site = self.config.site(model.site) if model is not None else None
        if model is None or not model.servable or site is None:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        why = exclusion_reason(site, RequestPolicy.for_institution(institution, data_class))
        if why is not None:
            raise PolicyViolation(f"The model '{name}' is served at site {site.name}: {why}")
        return model

    def _link(self, model: FineTunedModel) -> SiteLink:
        link = self.links.get(model.site)
        if link is None:
            raise ModelNotFound(f"The model '{model.name}' does not exist.", param="model")
        return link

    async def metadata(self, model: FineTunedModel) -> dict[str, Any]:
        return await self._link(model).metadata(model.name, model.institution)

    async def infer(self, model: FineTunedModel, body: dict[str, Any]) -> dict[str, Any]:
        return await self._link(model).infer(model.name, model.institution, body)


def _not_cancellable(status: str) -> BadRequest:
    return BadRequest(
        f"The job has {status} already and cannot be cancelled.",
        code="job_not_cancellable",
        param="job_id",
    )
