"""What each site can give a job now: the read model placement decides on.

A site's free capacity is its runner's offer minus what this federation's jobs use there
(from the store: jobs placed and not finished at the site), and its queue is the longer
of our own queued jobs and what the site's scheduler reports, so a busy shared cluster
gets fewer new jobs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import select

from verbund.config import DataClass, FederationConfig, InstitutionConfig
from verbund.errors import RunnerError
from verbund.federation import Federation
from verbund.jobs._placement import Placement, SiteSlot, place
from verbund.jobs._runner import Resources, Runner
from verbund.jobs._status import JobStatus
from verbund.policy import RequestPolicy
from verbund.store import Store, TrainingJobRow


@dataclass(frozen=True, slots=True)
class SiteSlots:
    config: FederationConfig
    store: Store
    federation: Federation
    runners: dict[str, Runner]

    async def slots(self) -> list[SiteSlot]:
        """Every site with a runner, as placement sees it right now."""
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
            # a local runner has no queue of its own: its queued jobs take resources too
            running = [j for j in here if j.status == JobStatus.running or j.runner == "local"]
            queued = sum(1 for j in here if j.status == JobStatus.queued)
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
                    base_models=frozenset(rc.base_models),
                )
            )
        return out

    async def placement(
        self,
        institution: InstitutionConfig,
        data_class: DataClass,
        demand: Resources,
        base_model: str = "",
    ) -> Placement:
        """Where a job of this institution, data class and size would go now."""
        policy = RequestPolicy.for_institution(institution, data_class)
        return place(
            policy,
            demand,
            await self.slots(),
            home_region=institution.home_region,
            home_site=self.federation.home_site,
            base_model=base_model,
        )
