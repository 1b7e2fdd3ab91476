"""Placement is a pure decision: properties over random federations and jobs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from verbund.config import DataClass, SiteState
from verbund.jobs import Resources, SiteSlot, busy, misfit, place
from verbund.policy import RequestPolicy, exclusion_reason

REGIONS = ["NW", "BY", "SN"]
GPU_TYPES = ["", "a100", "h100"]
CERTS = ["ISO27001", "BSI-C5"]

resources = st.builds(
    Resources,
    cpus=st.integers(1, 8),
    memory_mb=st.integers(64, 8192),
    gpus=st.integers(0, 2),
    gpu_type=st.sampled_from(GPU_TYPES),
    time_limit_minutes=st.integers(1, 600),
)


@st.composite
def slots(draw: st.DrawFn) -> list[SiteSlot]:
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        offer = draw(resources)
        out.append(
            SiteSlot(
                name=f"site-{i}",
                region=draw(st.sampled_from(REGIONS)),
                jurisdiction=draw(st.sampled_from(["DE", "AT"])),
                max_data_class=draw(st.sampled_from(list(DataClass))),
                state=draw(st.sampled_from(list(SiteState))),
                runner=draw(st.sampled_from(["local", "slurm"])),
                offer=offer,
                used_cpus=draw(st.integers(0, offer.cpus)),
                used_memory_mb=draw(st.integers(0, offer.memory_mb)),
                used_gpus=draw(st.integers(0, offer.gpus)),
                queued=draw(st.integers(0, 5)),
                certifications=tuple(draw(st.sets(st.sampled_from(CERTS), max_size=2))),
            )
        )
    return out


policies = st.builds(
    RequestPolicy,
    data_class=st.sampled_from(list(DataClass)),
    allowed_sites=st.frozensets(st.sampled_from([f"site-{i}" for i in range(6)]), max_size=3),
    allowed_regions=st.frozensets(st.sampled_from(REGIONS), max_size=2),
    allowed_jurisdictions=st.frozensets(st.sampled_from(["DE", "AT"]), max_size=1),
    required_certifications=st.frozensets(st.sampled_from(CERTS), max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, demand=resources, sites=slots())
def test_the_chosen_site_may_hold_the_data_fits_and_is_active(
    policy: RequestPolicy, demand: Resources, sites: list[SiteSlot]
) -> None:
    p = place(policy, demand, sites)
    by_name = {s.name: s for s in sites}
    if p.site is not None:
        chosen = by_name[p.site]
        assert chosen.max_data_class.rank >= policy.data_class.rank
        assert exclusion_reason(chosen, policy) is None
        assert chosen.state is SiteState.active
        assert misfit(chosen.offer, demand) is None
        assert busy(chosen, demand) is None
    # every site is accounted for exactly once
    seen = set(p.excluded) | set(p.unfit) | set(p.waiting) | ({p.site} if p.site else set())
    assert seen <= set(by_name)
    assert not (set(p.excluded) & (set(p.unfit) | set(p.waiting)))


@settings(max_examples=300, deadline=None)
@given(policy=policies, demand=resources, sites=slots())
def test_training_data_never_goes_to_a_site_that_may_not_hold_it(
    policy: RequestPolicy, demand: Resources, sites: list[SiteSlot]
) -> None:
    p = place(policy, demand, sites)
    for s in sites:
        if s.max_data_class.rank < policy.data_class.rank:
            assert p.site != s.name
            assert s.name in p.excluded


@settings(max_examples=300, deadline=None)
@given(policy=policies, demand=resources, sites=slots())
def test_some_site_is_chosen_whenever_one_could_start_the_job_now(
    policy: RequestPolicy, demand: Resources, sites: list[SiteSlot]
) -> None:
    startable = [
        s
        for s in sites
        if exclusion_reason(s, policy) is None
        and s.state is SiteState.active
        and misfit(s.offer, demand) is None
        and busy(s, demand) is None
    ]
    p = place(policy, demand, sites)
    assert (p.site is not None) == bool(startable)


@settings(max_examples=200, deadline=None)
@given(policy=policies, demand=resources, sites=slots())
def test_a_drained_or_maintained_site_gets_no_new_job(
    policy: RequestPolicy, demand: Resources, sites: list[SiteSlot]
) -> None:
    p = place(policy, demand, sites)
    if p.site is not None:
        assert next(s for s in sites if s.name == p.site).state is SiteState.active
    for s in sites:
        if s.state is not SiteState.active and s.name not in p.excluded | p.unfit:
            assert p.waiting[s.name] == f"site is in state {s.state.value}"


def slot(name: str, **kw: object) -> SiteSlot:
    base: dict[str, object] = {
        "name": name,
        "region": "NW",
        "jurisdiction": "DE",
        "max_data_class": DataClass.sensitive,
        "state": SiteState.active,
        "runner": "slurm",
        "offer": Resources(cpus=8, memory_mb=8192, gpus=0, time_limit_minutes=600),
    }
    base.update(kw)
    return SiteSlot(**base)  # type: ignore[arg-type]


def test_shorter_queues_win_then_home_region() -> None:
    policy = RequestPolicy(DataClass.internal)
    demand = Resources(cpus=2, memory_mb=512, time_limit_minutes=10)
    sites = [slot("a", queued=3), slot("b", queued=1, region="BY"), slot("c", queued=1)]
    assert place(policy, demand, sites, home_region="BY").site == "b"
    assert place(policy, demand, sites, home_region="NW").site == "c"


def test_gpu_jobs_go_only_where_the_gpus_are() -> None:
    policy = RequestPolicy(DataClass.internal)
    demand = Resources(cpus=1, memory_mb=512, gpus=1, gpu_type="h100", time_limit_minutes=10)
    sites = [
        slot("cpu-only"),
        slot("a100", offer=Resources(8, 8192, 4, "a100", 600)),
        slot("h100", offer=Resources(8, 8192, 4, "h100", 600)),
    ]
    p = place(policy, demand, sites)
    assert p.site == "h100"
    assert p.unfit == {
        "cpu-only": "needs 1 GPUs, the site's runner offers 0",
        "a100": "needs GPU type h100, the site has a100",
    }
