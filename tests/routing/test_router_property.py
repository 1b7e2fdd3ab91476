"""Property: over random federations, policies, lifecycle states and failures, no routing
decision ever sends a request where policy forbids, and nothing compliant is refused."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from verbund.config import DataClass, InstitutionConfig, SiteState, parse_config
from verbund.errors import NoBackendAvailable, PolicyViolation
from verbund.federation import EngineLoad, Federation
from verbund.policy import RequestPolicy, exclusion_reason
from verbund.routing import PolicyName, RouteContext, Router, make_policy

REGIONS = ["NW", "BY", "SN", "HE"]
JURIS = ["DE", "AT"]
CERTS = ["ISO27001", "BSI-C5"]


@st.composite
def federations(draw: st.DrawFn) -> dict[str, Any]:
    n_sites = draw(st.integers(1, 5))
    sites = []
    for i in range(n_sites):
        sites.append(
            {
                "name": f"s{i}",
                "region": draw(st.sampled_from(REGIONS)),
                "jurisdiction": draw(st.sampled_from(JURIS)),
                "max_data_class": draw(st.sampled_from(list(DataClass))).value,
                "certifications": draw(st.lists(st.sampled_from(CERTS), unique=True)),
                "backends": [
                    {
                        "name": f"s{i}-b{j}",
                        "url": f"http://s{i}b{j}.invalid",
                        "models": ["m"],
                        "max_concurrency": draw(st.integers(0, 8)),
                    }
                    for j in range(draw(st.integers(1, 3)))
                ],
            }
        )
    return {"sites": sites, "models": [{"name": "m"}]}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Federation, RequestPolicy, RouteContext, str]:
    fed = Federation(parse_config(draw(federations())))
    for site in fed:
        site.state = draw(st.sampled_from(list(SiteState)))
        for b in site.backends:
            b.healthy = draw(st.booleans())
            b.refused = not b.healthy and draw(st.booleans())
            b.ejected_until = draw(st.sampled_from([0.0, 50.0, 200.0]))
            b.outstanding = draw(st.integers(0, 10))
            b.engine = EngineLoad(
                running=draw(st.integers(0, 10)),
                waiting=draw(st.integers(0, 10)),
                cache_usage=draw(st.floats(0, 1)),
                scraped_at=draw(st.sampled_from([0.0, 99.0])),
            )
    inst = InstitutionConfig(
        id="i",
        home_region=draw(st.sampled_from(["", *REGIONS])),
        allowed_sites=draw(st.lists(st.sampled_from([s.name for s in fed]), unique=True)),
        allowed_regions=draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=2)),
        allowed_jurisdictions=draw(st.lists(st.sampled_from(JURIS), unique=True, max_size=1)),
        required_certifications=draw(st.lists(st.sampled_from(CERTS), unique=True, max_size=1)),
    )
    policy = RequestPolicy.for_institution(inst, draw(st.sampled_from(list(DataClass))))
    ctx = RouteContext(
        home_site=draw(st.sampled_from(["", *[s.name for s in fed]])),
        home_region=inst.home_region,
        affinity_key=draw(st.sampled_from(["", "a", "b"])),
        priority=draw(st.sampled_from(["interactive", "batch"])),
        now=100.0,
    )
    return fed, policy, ctx, draw(st.sampled_from(list(PolicyName)))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_routing_decision_violates_policy(
    scenario: tuple[Federation, RequestPolicy, RouteContext, str],
) -> None:
    fed, policy, ctx, policy_name = scenario
    router = Router(fed, make_policy(policy_name, fed.config.routing), fed.config.routing)
    compliant = [s for s in fed if exclusion_reason(s, policy) is None]
    usable = [
        b
        for s in compliant
        if s.state is SiteState.active
        for b in s.backends
        if b.available(ctx.now)
    ]
    try:
        plan = router.plan("m", policy, ctx)
    except PolicyViolation:
        assert not compliant
        return
    except NoBackendAvailable:
        assert compliant
        if ctx.priority == "interactive":
            assert not usable
        return
    assert plan, "a plan is never empty"
    assert len({id(b) for b in plan}) == len(plan)
    serving = [b for s in compliant if s.state is SiteState.active for b in s.backends]
    panic = len(usable) < fed.config.routing.panic_threshold * len(serving)
    for b in plan:
        assert exclusion_reason(b.site, policy) is None
        assert b.site.state is SiteState.active
        assert b.available(ctx.now) or (panic and not b.refused)
    if ctx.priority == "interactive":
        if panic:  # every healthy one, and healthy ones first
            assert {id(b) for b in plan[: len(usable)]} == {id(b) for b in usable}
        else:
            assert {id(b) for b in plan} == {id(b) for b in usable}
