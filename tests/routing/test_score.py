"""The scoring policy as a pure function: stats in, order out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config
from verbund.config import RoutingConfig
from verbund.federation import Backend, EngineLoad, Federation
from verbund.routing import RouteContext, ScorePolicy, estimate, rendezvous_weight

NOW = 1000.0


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    f = Federation(make_config(tmp_path))
    for b in f.backends.values():
        b.latency.observe_ttft(0.2)
        b.latency.observe_tpot(0.02)
    return f


def order(fed: Federation, cfg: RoutingConfig | None = None, **ctx: object) -> list[str]:
    policy = ScorePolicy(cfg or RoutingConfig())
    context = RouteContext(**{"home_site": "west", "home_region": "NW", "now": NOW, **ctx})  # type: ignore[arg-type]
    return [b.name for b in policy.rank(list(fed.backends.values()), context)]


def test_home_site_and_home_region_break_ties(fed: Federation) -> None:
    assert order(fed)[0] == "west-1"
    assert order(fed, home_site="", home_region="BY")[0] == "sued-1"


def test_load_outweighs_the_region(fed: Federation) -> None:
    fed.backends["west-1"].outstanding = 2
    assert order(fed)[0] != "west-1"


def test_fresh_engine_metrics_count_stale_ones_do_not(fed: Federation) -> None:
    west = fed.backends["west-1"]
    west.engine = EngineLoad(running=3, waiting=5, scraped_at=NOW - 1)
    assert order(fed)[-1] == "west-1"
    west.engine = EngineLoad(running=3, waiting=5, scraped_at=NOW - 60)
    assert order(fed)[0] == "west-1"


def test_capacity_lets_a_big_server_take_more(tmp_path: Path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["sites"][1]["backends"][0]["max_concurrency"] = 16
    from verbund.config import parse_config

    fed = Federation(parse_config(data))
    fed.backends["sued-1"].outstanding = 8  # half busy, free slots left
    fed.backends["west-1"].outstanding = 1  # single slot, busy
    fed.backends["ost-1"].outstanding = 1
    assert order(fed)[0] == "sued-1"


def test_a_nearly_full_kv_cache_is_avoided(fed: Federation) -> None:
    fed.backends["west-1"].engine = EngineLoad(cache_usage=0.99, scraped_at=NOW)
    assert order(fed)[0] != "west-1"


def test_a_slow_backend_is_avoided(fed: Federation) -> None:
    for _ in range(20):
        fed.backends["west-1"].latency.observe_ttft(3.0)
    assert order(fed)[-1] == "west-1"


def test_slow_start_offers_a_growing_share_of_slots(tmp_path: Path) -> None:
    from verbund.config import parse_config

    data = make_config(tmp_path).model_dump(mode="json")
    for site in data["sites"]:
        site["backends"][0]["max_concurrency"] = 10
    fed = Federation(parse_config(data))
    for b in fed.backends.values():
        b.latency.observe_ttft(0.2)
        b.outstanding = 2
    west = fed.backends["west-1"]
    west.returned_at = NOW - 1  # 10 % into a 10 s ramp: 1 of 10 slots
    assert order(fed)[-1] == "west-1"
    west.outstanding = 0  # ... yet an idle returning backend still takes requests
    assert order(fed)[0] == "west-1"
    west.outstanding = 2
    west.returned_at = NOW - 11
    assert order(fed)[0] == "west-1"


def test_affinity_keeps_a_conversation_on_one_backend(fed: Federation) -> None:
    names = sorted(fed.backends)
    keys = [f"conv-{i}" for i in range(30)]
    picked = {k: order(fed, affinity_key=k)[0] for k in keys}
    for k in keys:
        want = max(names, key=lambda n: rendezvous_weight(k, n))
        assert picked[k] == want
    assert len(set(picked.values())) == 3, "keys should spread over all backends"


def test_affinity_yields_when_its_backend_is_overloaded(fed: Federation) -> None:
    key = "conv-x"
    favourite = order(fed, affinity_key=key)[0]
    fed.backends[favourite].outstanding = 4
    assert order(fed, affinity_key=key)[0] != favourite


def test_affinity_can_be_switched_off(fed: Federation) -> None:
    cfg = RoutingConfig(affinity=False)
    assert {order(fed, cfg, affinity_key=f"k{i}")[0] for i in range(20)} == {"west-1"}


def test_estimate_is_pure(fed: Federation) -> None:
    backends: list[Backend] = list(fed.backends.values())
    a = estimate(backends, RouteContext(now=NOW), RoutingConfig(), NOW)
    b = estimate(backends, RouteContext(now=NOW), RoutingConfig(), NOW)
    assert a == b
    fed.backends["ost-1"].outstanding = 3
    c = estimate(backends, RouteContext(now=NOW), RoutingConfig(), NOW)
    assert c[2].wait > a[2].wait and c[0].wait == a[0].wait
