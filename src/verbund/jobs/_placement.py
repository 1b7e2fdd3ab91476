"""Placement: which site gets a job. A pure decision: facts in, a site (or none) out.

Order of the filters, each one hard:

1. policy — the data class of the training data and the institution's allowed sites,
   regions, jurisdictions and required certifications
   (:func:`verbund.policy.split_sites`): training data never goes to a site that may not
   hold it;
2. fit — the site's runner can give one job what it asks for (CPUs, memory, GPU type
   and count, time limit) and lists the base model the job loads, if it loads one;
3. availability — the site is ``active`` (a draining site keeps its running jobs but
   gets no new ones) and, for runners without a queue of their own (``local``), has the
   resources free right now.

What is left is ordered first by where the job's data already lies (the site whose agent
holds its training files: the data need not move), then by queue length relative to the
site's size, the institution's home region, the access point's home site and free CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verbund.config import DataClass, SiteState
from verbund.jobs._runner import Resources
from verbund.policy import RequestPolicy, split_sites


@dataclass(frozen=True, slots=True)
class SiteSlot:
    """A site as placement sees it: policy facts, runner capacity and current use."""

    name: str
    region: str
    jurisdiction: str
    max_data_class: DataClass
    state: SiteState
    runner: str  # local | slurm
    offer: Resources  # the most one job may get there
    used_cpus: int = 0  # by this federation's jobs running there now
    used_memory_mb: int = 0
    used_gpus: int = 0
    queued: int = 0  # jobs waiting in the site's queue
    certifications: tuple[str, ...] = ()
    base_models: frozenset[str] = frozenset()  # the runner's [sites.runner] base_models


@dataclass(frozen=True, slots=True)
class Placement:
    site: str | None
    excluded: dict[str, str] = field(default_factory=dict)  # by policy
    unfit: dict[str, str] = field(default_factory=dict)  # can never take this job
    waiting: dict[str, str] = field(default_factory=dict)  # could, but not now

    @property
    def possible(self) -> bool:
        """Some site could take the job once it is free (or back from maintenance)."""
        return self.site is not None or bool(self.waiting)


def misfit(offer: Resources, demand: Resources) -> str | None:
    """Why a site can never run this job, or None."""
    if demand.cpus > offer.cpus:
        return f"needs {demand.cpus} CPUs, the site's runner offers {offer.cpus}"
    if demand.memory_mb > offer.memory_mb:
        return f"needs {demand.memory_mb} MB memory, the site's runner offers {offer.memory_mb}"
    if demand.gpus > offer.gpus:
        return f"needs {demand.gpus} GPUs, the site's runner offers {offer.gpus}"
    if demand.gpus and demand.gpu_type and demand.gpu_type != offer.gpu_type:
        return f"needs GPU type {demand.gpu_type}, the site has {offer.gpu_type or 'none named'}"
    if demand.time_limit_minutes > offer.time_limit_minutes:
        return (
            f"needs {demand.time_limit_minutes} min, the site allows {offer.time_limit_minutes} min"
        )
    return None


def busy(slot: SiteSlot, demand: Resources) -> str | None:
    """Why a fitting, active site cannot start the job right now, or None."""
    if slot.runner != "local":
        return None  # a batch system queues the job itself
    if slot.used_cpus + demand.cpus > slot.offer.cpus:
        return f"{slot.used_cpus} of {slot.offer.cpus} CPUs in use"
    if slot.used_memory_mb + demand.memory_mb > slot.offer.memory_mb:
        return f"{slot.used_memory_mb} of {slot.offer.memory_mb} MB memory in use"
    if slot.used_gpus + demand.gpus > slot.offer.gpus:
        return f"{slot.used_gpus} of {slot.offer.gpus} GPUs in use"
    return None


def place(
    policy: RequestPolicy,
    demand: Resources,
    slots: list[SiteSlot],
    *,
    home_region: str = "",
    home_site: str = "",
    base_model: str = "",
    data_site: str = "",
) -> Placement:
    allowed, excluded = split_sites(slots, policy)
    unfit: dict[str, str] = {}
    waiting: dict[str, str] = {}
    ready: list[SiteSlot] = []
    for slot in allowed:
        why = misfit(slot.offer, demand)
        if why is None and base_model and base_model not in slot.base_models:
            why = f"does not list the base model {base_model}"
        if why is not None:
            unfit[slot.name] = why
            continue
        if slot.state is not SiteState.active:
            waiting[slot.name] = f"site is in state {slot.state.value}"
            continue
        why = busy(slot, demand)
        if why is not None:
            waiting[slot.name] = why
            continue
        ready.append(slot)
    if not ready:
        return Placement(None, excluded, unfit, waiting)
    best = min(
        ready,
        key=lambda s: (
            s.name != data_site,
            (s.queued + s.used_cpus / s.offer.cpus) / max(1, s.offer.cpus // demand.cpus),
            s.region != home_region,
            s.name != home_site,
            -(s.offer.cpus - s.used_cpus),
            s.name,
        ),
    )
    return Placement(best.name, excluded, unfit, waiting)
