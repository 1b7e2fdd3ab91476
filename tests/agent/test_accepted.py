"""What an access point takes from a site's catalogue (a pure decision), and how its
prober treats backends the site's agent watches."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import federation_dict
from tests.fakes import FakeBackend
from verbund.config import (
    BackendConfig,
    DataClass,
    ModelConfig,
    PriceList,
    RoutingConfig,
    SiteConfig,
    parse_config,
)
from verbund.federation import (
    Backend,
    Federation,
    HealthTracker,
    Prober,
    SiteCatalogue,
    UpstreamPool,
    accepted,
)


def _catalogue(**site: object) -> SiteCatalogue:
    return SiteCatalogue.model_validate(
        {
            "site": {"name": "west", "region": "NW", "jurisdiction": "DE",
                     "max_data_class": "sensitive", "certifications": ["BSI-C5"], **site},
            "models": [{"name": "a", "data_classes": ["public"]}, {"name": "b"}],
            "backends": [
                {"name": "w1", "url": "http://w1:1", "models": ["a", "b"], "healthy": True,
                 "api_key_env": "W1_KEY", "some_future_field": 1},
            ],
        }
    )  # fmt: skip


def test_announced_facts_fill_what_the_config_leaves_open() -> None:
    offer = accepted(SiteConfig(name="west", agent_url="http://x", agent_key_env="K"), _catalogue())
    assert offer.site.region == "NW" and offer.site.max_data_class.value == "sensitive"
    assert offer.site.certifications == ["BSI-C5"]
    assert [m.name for m in offer.models] == ["a", "b"]
    assert offer.health == {"w1": True}


def test_explicit_facts_win_and_max_data_class_only_caps() -> None:
    config = SiteConfig(
        name="west", region="XX", max_data_class="internal", agent_url="http://x", agent_key_env="K"
    )
    offer = accepted(config, _catalogue())
    assert offer.site.region == "XX" and offer.site.max_data_class.value == "internal"
    # a site that claims less than the config trusts it with is believed
    offer = accepted(
        config.model_copy(update={"max_data_class": DataClass.sensitive}), _catalogue()
    )
    assert offer.site.max_data_class.value == "sensitive"
    lower = accepted(config.model_copy(update={"max_data_class": DataClass.sensitive}),
                     _catalogue(max_data_class="public"))  # fmt: skip
    assert lower.site.max_data_class.value == "public"


def test_the_allow_list_and_the_relay() -> None:
    config = SiteConfig(name="west", agent_url="http://x", agent_key_env="K", accept_models=["b"])
    offer = accepted(config, _catalogue(), relay_url=lambda b: f"http://x/relay/{b}")
    assert [m.name for m in offer.models] == ["b"]
    (backend,) = offer.backends
    assert backend.models == ["b"] and backend.url == "http://x/relay/w1"
    assert backend.api_key_env is None  # the agent adds the backend's key
    assert offer.refused == ["model 'a': not in accept_models"]


async def test_the_prober_leaves_announced_backends_to_the_agent(tmp_path: Path) -> None:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    site = fed.sites["west"]
    fed.apply_site(
        "west",
        site.config,
        [ModelConfig(name="smol")],
        [BackendConfig(name="w-announced", url="http://wa:1", models=["smol"])],
    )
    fakes = {b: FakeBackend(b) for b in fed.backends}
    routing = RoutingConfig()
    pool = UpstreamPool(fed, routing, lambda b: httpx.MockTransport(fakes[b.name]))
    for b in fed.backends.values():
        if b.announced:
            pool.add(b, {})
    prober = Prober(fed, pool, HealthTracker(routing, fed), routing)
    await prober.probe_all()
    assert fakes["w-announced"].probes == 0 and fakes["west-1"].probes == 1
    announced = fed.backends["w-announced"]
    announced.healthy = False  # taken out by this access point's own checks
    await prober.probe_all()
    assert fakes["w-announced"].probes == 1 and announced.healthy  # and brought back
    announced.healthy, announced.site_down = False, True  # the agent says it is down
    await prober.probe_all()
    assert fakes["w-announced"].probes == 1
    await pool.aclose()


class _Transport(httpx.MockTransport):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_the_clients_of_a_backend_that_left_close_once_its_requests_are_done(
    tmp_path: Path,
) -> None:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    config = fed.sites["west"].config
    announced = [BackendConfig(name="w-gone", url="http://wg:1", models=["smol"])]
    fed.apply_site("west", config, [ModelConfig(name="smol")], announced)
    transports: dict[str, _Transport] = {}

    def transport(b: Backend) -> _Transport:
        return transports.setdefault(b.name, _Transport(FakeBackend(b.name)))

    pool = UpstreamPool(fed, RoutingConfig(), transport)
    gone = fed.backends["w-gone"]
    with gone.claim(0.0):  # a request still streams from it
        _, removed = fed.apply_site("west", config, [ModelConfig(name="smol")], [])
        assert removed == [gone]
        pool.remove(gone)
        await pool.reap()
        assert not transports["w-gone"].closed
    await pool.reap()
    assert transports["w-gone"].closed
    assert not any(t.closed for name, t in transports.items() if name != "w-gone")
    await pool.aclose()


_PRICES = {"currency": "EUR", "models": {"a": {"input_per_million": "2.50"}}}


def test_announced_prices_count_where_the_config_sets_none() -> None:
    bare = SiteConfig(name="west", agent_url="http://x", agent_key_env="K")
    catalogue = _catalogue().model_copy(update={"prices": PriceList.model_validate(_PRICES)})
    offer = accepted(bare, catalogue)
    assert offer.site.prices is not None
    assert str(offer.site.prices.models["a"].input_per_million) == "2.50"
    own = PriceList.model_validate({"currency": "EUR", "models": {"a": {"per_inference": "1"}}})
    explicit = accepted(bare.model_copy(update={"prices": own}), catalogue)
    assert explicit.site.prices == own  # the access point's config wins
    dollars = catalogue.model_copy(
        update={"prices": PriceList.model_validate({**_PRICES, "currency": "USD"})}
    )
    other = accepted(bare, dollars, currency="EUR")
    assert other.site.prices is None
    assert other.refused == ["prices: in USD, the federation settles in EUR"]
