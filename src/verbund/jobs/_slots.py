"""What a site can give a job now: the facts placement decides on.

A site agent reports its runner as a :class:`RunnerReport`: the most one job may get
there (its ``[runner]`` section), what the federation's jobs use there now (from the
agent's own store: jobs placed and not finished) and the longer of its own queued jobs
and what the site's scheduler reports, so a busy shared cluster gets fewer new jobs.
The access point turns each report, with the site's policy facts and lifecycle state,
into the :class:`~verbund.jobs.SiteSlot` that :func:`~verbund.jobs.place` decides on;
the agent decides on its own slot too, before it starts a job (two access points may
have placed on the same free CPUs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from verbund.config import DataClass, RunnerConfig, SiteState
from verbund.jobs._placement import SiteSlot
from verbund.jobs._runner import Resources
from verbund.jobs._status import JobStatus
from verbund.store import TrainingJobRow


def offer_of(rc: RunnerConfig) -> Resources:
    return Resources(
        cpus=rc.cpus,
        memory_mb=rc.memory_mb,
        gpus=rc.gpus,
        gpu_type=rc.gpu_type,
        time_limit_minutes=rc.max_time_minutes,
    )


@dataclass(frozen=True, slots=True)
class RunnerReport:
    """A site's runner as its agent reports it (JSON both ways)."""

    runner: str  # local | slurm
    offer: Resources
    used_cpus: int = 0
    used_memory_mb: int = 0
    used_gpus: int = 0
    queued: int = 0
    base_models: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, rc: RunnerConfig, active: Iterable[TrainingJobRow], site_pending: int = 0
    ) -> RunnerReport:
        """The report from the runner's config and the site's unfinished, placed jobs."""
        here = list(active)
        # a local runner has no queue of its own: its queued jobs take resources too
        local = rc.kind == "local"
        running = [j for j in here if j.status == JobStatus.running or local]
        queued = sum(1 for j in here if j.status == JobStatus.queued)
        return cls(
            runner=rc.kind,
            offer=offer_of(rc),
            used_cpus=sum(int(j.resources.get("cpus", 1)) for j in running),
            used_memory_mb=sum(int(j.resources.get("memory_mb", 0)) for j in running),
            used_gpus=sum(int(j.resources.get("gpus", 0)) for j in running),
            queued=max(queued, site_pending),
            base_models=frozenset(rc.base_models),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "offer": self.offer.as_dict(),
            "used_cpus": self.used_cpus,
            "used_memory_mb": self.used_memory_mb,
            "used_gpus": self.used_gpus,
            "queued": self.queued,
            "base_models": sorted(self.base_models),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunnerReport:
        return cls(
            runner=str(data["runner"]),
            offer=Resources(**data["offer"]),
            used_cpus=int(data.get("used_cpus", 0)),
            used_memory_mb=int(data.get("used_memory_mb", 0)),
            used_gpus=int(data.get("used_gpus", 0)),
            queued=int(data.get("queued", 0)),
            base_models=frozenset(str(m) for m in data.get("base_models", ())),
        )


def site_slot(
    *,
    name: str,
    region: str,
    jurisdiction: str,
    max_data_class: DataClass,
    certifications: Iterable[str],
    state: SiteState,
    report: RunnerReport,
) -> SiteSlot:
    """A site as placement sees it: its policy facts, its state and its runner's report."""
    return SiteSlot(
        name=name,
        region=region,
        jurisdiction=jurisdiction,
        max_data_class=max_data_class,
        state=state,
        runner=report.runner,
        offer=report.offer,
        used_cpus=report.used_cpus,
        used_memory_mb=report.used_memory_mb,
        used_gpus=report.used_gpus,
        queued=report.queued,
        certifications=tuple(certifications),
        base_models=report.base_models,
    )
