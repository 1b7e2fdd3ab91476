from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MODEL, make_config
from verbund.config import DataClass, RoutingConfig, SiteState
from verbund.errors import ModelNotFound, NoBackendAvailable, PolicyViolation
from verbund.federation import Federation
from verbund.policy import RequestPolicy
from verbund.routing import LeastOutstanding, RouteContext, Router


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return Federation(make_config(tmp_path))


def plan(
    fed: Federation,
    data_class: DataClass = DataClass.internal,
    cfg: RoutingConfig | None = None,
    **kw: object,
) -> list[str]:
    router = Router(fed, LeastOutstanding(), cfg)
    policy = RequestPolicy(data_class, **kw)  # type: ignore[arg-type]
    return [b.name for b in router.plan(MODEL, policy, RouteContext(home_site="west", now=100.0))]


def test_home_site_wins_when_loads_are_equal(fed: Federation) -> None:
    assert plan(fed)[0] == "west-1"


def test_fewest_outstanding_first(fed: Federation) -> None:
    fed.backends["west-1"].outstanding = 3
    fed.backends["sued-1"].outstanding = 1
    assert plan(fed) == ["ost-1", "sued-1", "west-1"]


def test_capacity_hint_scales_load(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    data = cfg.model_dump(mode="json")
    data["sites"][1]["backends"][0]["max_concurrency"] = 100
    data["sites"][0]["backends"][0]["max_concurrency"] = 4
    from verbund.config import parse_config

    fed = Federation(parse_config(data))
    fed.backends["west-1"].outstanding = 2  # 50 % busy
    fed.backends["sued-1"].outstanding = 10  # 10 % busy
    fed.backends["ost-1"].outstanding = 5  # no hint: 5 requests
    assert plan(fed)[0] == "sued-1"


def test_drained_and_unhealthy_and_ejected_are_skipped(fed: Federation) -> None:
    fed.set_state("west", SiteState.draining)
    fed.backends["sued-1"].healthy = False
    assert plan(fed) == ["ost-1"]
    fed.backends["ost-1"].ejected_until = 200.0
    with pytest.raises(NoBackendAvailable) as err:
        plan(fed, cfg=RoutingConfig(panic_threshold=0))
    msg = err.value.message
    assert "west: site is in state draining" in msg
    assert "sued: no healthy backend" in msg


def test_sensitive_data_only_goes_to_sites_that_may_hold_it(fed: Federation) -> None:
    assert plan(fed, DataClass.sensitive) == ["west-1"]
    assert set(plan(fed, DataClass.confidential)) == {"west-1", "sued-1"}


def test_policy_never_falls_back(fed: Federation) -> None:
    fed.set_state("west", SiteState.maintenance)
    with pytest.raises(NoBackendAvailable) as err:
        plan(fed, DataClass.sensitive)
    assert "sued: data class sensitive exceeds the site's max_data_class confidential" in (
        err.value.message
    )
    with pytest.raises(PolicyViolation) as perr:
        plan(fed, DataClass.sensitive, allowed_regions=frozenset({"BY"}))
    assert perr.value.status == 403
    assert "west: region NW not among the institution's allowed_regions" in perr.value.message


def test_unknown_model(fed: Federation) -> None:
    with pytest.raises(ModelNotFound):
        Router(fed, LeastOutstanding()).plan(
            "gpt-5", RequestPolicy(DataClass.public), RouteContext()
        )


def test_a_stalled_backend_is_routed_around_while_others_remain(fed: Federation) -> None:
    west = fed.backends["west-1"]
    west.outstanding, west.busy_since, west.last_progress = 2, 90.0, 98.0
    assert "west-1" not in plan(fed)  # 2 s in flight without a byte back (floor 0.75 s)
    west.last_progress = 99.5  # bytes came back half a second ago: busy, not stalled
    assert "west-1" in plan(fed)
    west.last_progress = 98.0
    for b in ("sued-1", "ost-1"):
        fed.backends[b].healthy = False
        fed.backends[b].refused = True
    assert plan(fed) == ["west-1"]  # the only one left is still tried


def test_panic_routes_to_all_when_too_few_look_healthy(fed: Federation) -> None:
    """Below the panic threshold the plan holds every backend not known dead, healthy ones
    first, instead of none; a refused connection or a 429 back-off keeps a backend out."""
    cfg = RoutingConfig(panic_threshold=0.5)
    west, sued, ost = (fed.backends[n] for n in ("west-1", "sued-1", "ost-1"))
    west.healthy = False  # one of three down: 2/3 healthy, no panic
    assert plan(fed, cfg=cfg) == ["ost-1", "sued-1"]
    sued.ejected_until = 200.0  # 1/3 healthy: panic
    assert plan(fed, cfg=cfg) == ["ost-1", "west-1", "sued-1"]
    ost.healthy = False  # none healthy: still a plan, not a 503
    assert set(plan(fed, cfg=cfg)) == {"west-1", "sued-1", "ost-1"}
    west.refused = True  # nothing listens there: not worth a try even in panic
    ost.busy_until = 200.0  # asked us to back off
    assert plan(fed, cfg=cfg) == ["sued-1"]
    fed.set_state("sued", SiteState.draining)  # lifecycle is never relaxed
    with pytest.raises(NoBackendAvailable):
        plan(fed, cfg=cfg)
    # policy is never relaxed either: sensitive data only ever goes to west
    fed.set_state("sued", SiteState.active)
    with pytest.raises(NoBackendAvailable):
        plan(fed, DataClass.sensitive, cfg=cfg)


def test_a_large_federation_ranks_a_sample(tmp_path: Path) -> None:
    """Scoring every one of hundreds of candidates per request made routing cost grow
    with the federation; a sample is ranked: the home site, the affinity window, random."""
    from tests.federation.test_prober import big_federation

    fed = big_federation(tmp_path, 100, 4)
    router = Router(fed, LeastOutstanding(), RoutingConfig(max_ranked=32))
    policy = RequestPolicy(DataClass.internal)
    seen: set[str] = set()
    for _ in range(50):
        names = [b.name for b in router.plan("m", policy, RouteContext(home_site="s7", now=1.0))]
        assert len(names) == 32 and len(set(names)) == 32
        assert {"s7-b0", "s7-b1", "s7-b2", "s7-b3"} <= set(names)  # the home site, always
        seen |= set(names)
    assert len(seen) > 200  # the rest spreads over the federation
    ctx = RouteContext(home_site="s7", affinity_key="conversation-1", now=1.0)
    window = set.intersection(*({b.name for b in router.plan("m", policy, ctx)} for _ in range(20)))
    assert len(window) >= 4 + 8  # home site and the same affinity window every time
    everyone = Router(fed, LeastOutstanding(), RoutingConfig(max_ranked=0))
    assert len(everyone.plan("m", policy, RouteContext(now=1.0))) == 400
