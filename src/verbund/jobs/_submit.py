"""Getting a queued job to a site: place it, submit it, and find it again after a crash.

The chosen site is written before the job is submitted, and the runner's job id right
after; an access point that dies in between finds the job at the site by its id
(:meth:`Submitter.recover`) or, if it never got there, places it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from verbund.config import DataClass, FederationConfig, InstitutionConfig
from verbund.errors import NotFound, RunnerError
from verbund.jobs._events import add_event
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import JobSpec, Resources, Runner
from verbund.jobs._slots import SiteSlots
from verbund.jobs._status import TERMINAL
from verbund.policy import describe_exclusions
from verbund.store import TrainingJobRow

log = logging.getLogger("verbund.jobs")


@dataclass
class Submitter:
    config: FederationConfig
    rows: JobRows
    sites: SiteSlots
    files: TrainingFileSource
    recipes: RecipeBook
    institution: Callable[[str], InstitutionConfig | None]
    _waiting: dict[str, str] = field(default_factory=dict)  # job -> last "waiting" message

    @property
    def runners(self) -> dict[str, Runner]:
        return self.sites.runners

    async def place_and_submit(self, row: TrainingJobRow) -> None:
        inst = self.institution(row.institution_id)
        if inst is None:
            await self.rows.fail(
                row.id, "institution_removed", "The institution is no longer a member."
            )
            return
        if row.recipe not in self.recipes.recipes:
            await self.rows.fail(
                row.id, "unknown_recipe", f"The recipe {row.recipe} is not registered."
            )
            return
        recipe = self.recipes.recipes[row.recipe]
        p = await self.sites.placement(
            inst,
            DataClass(row.data_class),
            Resources(**row.resources),
            recipe.base_model(row.params),
        )
        if p.site is None:
            if not p.possible:
                why = describe_exclusions({**p.excluded, **p.unfit}, [])
                await self.rows.fail(row.id, "no_site", f"No site may run this job any more: {why}")
                return
            waiting = "Waiting for a site: " + describe_exclusions(p.waiting, [])
            if self._waiting.get(row.id) != waiting:  # one event per change, not per poll
                self._waiting[row.id] = waiting
                await self.rows.update(row.id, lambda s, r: add_event(s, r.id, waiting))
            return
        self._waiting.pop(row.id, None)
        site, runner = p.site, self.runners[p.site]

        def choose(s: AsyncSession, r: TrainingJobRow) -> None:
            r.site, r.runner = site, runner.kind

        await self.rows.update(row.id, choose)  # before submitting: a crash now is recoverable
        try:
            handle = await runner.submit(await self._spec(row, site))
        except (RunnerError, NotFound) as exc:
            message = str(exc) if isinstance(exc, RunnerError) else exc.message
            attempts = row.submit_attempts + 1

            def retry(s: AsyncSession, r: TrainingJobRow) -> None:
                r.site, r.runner, r.submit_attempts = None, None, attempts
                add_event(s, r.id, f"Submitting to {site} failed: {message}", level="warn")

            await self.rows.update(row.id, retry)
            if attempts >= self.config.training.submit_attempts:
                await self.rows.fail(
                    row.id, "site_unavailable", f"Could not submit the job: {message}"
                )
            return

        def submitted(s: AsyncSession, r: TrainingJobRow) -> None:
            r.runner_job_id = handle
            add_event(
                s,
                r.id,
                f"Job placed at site {site} ({runner.kind} runner, job {handle.split(':')[0]})",
                data={"site": site, "runner": runner.kind},
            )

        await self.rows.update(row.id, submitted)
        log.info("job %s submitted to %s (%s %s)", row.id, site, runner.kind, handle)

    async def _spec(self, row: TrainingJobRow, site: str) -> JobSpec:
        recipe = self.recipes.get(row.recipe)
        inputs = {"training": (await self.files.open(row.institution_id, row.training_file)).path}
        if row.validation_file:
            inputs["validation"] = (
                await self.files.open(row.institution_id, row.validation_file)
            ).path
        params = {**row.params, "seed": row.seed}
        if recipe.site_model:
            params["base_model_path"] = self._base_model_path(site, params)
            params["gpus"] = Resources(**row.resources).gpus  # the device it runs on
        return JobSpec(
            job_id=row.id,
            recipe_script=recipe.script,
            support=recipe.support,
            inputs=inputs,
            params=params,
            resources=Resources(**row.resources),
        )

    def _base_model_path(self, site: str, params: dict[str, Any]) -> str:
        """The folder of the job's base model as the site lists it: never a client's path."""
        name = params.get("base_model")
        for sc in self.config.sites:
            if sc.name == site and sc.runner is not None and isinstance(name, str):
                path = sc.runner.base_models.get(name)
                if path is not None:
                    return path
        raise RunnerError(f"site {site} does not list the base model {name}")

    async def recover(self, row: TrainingJobRow) -> None:
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

        await self.rows.update(row.id, apply)
