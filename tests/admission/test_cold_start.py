"""Requests for on-demand models that are not running: which site is asked, the bounded
wait, 503 model_starting with Retry-After, never a non-compliant site."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODEL, federation_dict
from verbund.admission import ColdStart
from verbund.config import DataClass, ModelConfig, RoutingConfig, parse_config
from verbund.errors import ModelStarting
from verbund.federation import Federation, OnDemandModel
from verbund.policy import RequestPolicy

OD = "od-model"


class FakeAgent:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    async def report_demand(self, model: str, **body: Any) -> dict[str, Any]:
        from verbund.errors import SiteAgentUnavailable

        self.calls.append({"model": model, **body})
        if self.fail:
            raise SiteAgentUnavailable("agent away")
        return {"status": "starting"}


def _federation(tmp_path: Path, on_demand_at: dict[str, str]) -> Federation:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    for site, status in on_demand_at.items():
        fed.sites[site].on_demand = {OD: OnDemandModel(status, 12.0)}
        fed.apply_site(site, fed.sites[site].config, [ModelConfig(name=OD)], [])
    return fed


def _cold(fed: Federation, agents: dict[str, FakeAgent], **routing: Any) -> ColdStart:
    cfg = RoutingConfig.model_validate({"cold_start_wait": 0.2, **routing})
    event = asyncio.Event()
    return ColdStart(fed, agents, lambda: event, cfg)  # type: ignore[arg-type]


def policy(data_class: DataClass = DataClass.internal) -> RequestPolicy:
    return RequestPolicy(data_class=data_class)


async def test_a_cold_model_is_started_and_a_late_start_is_503_model_starting(
    tmp_path: Path,
) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    agent = FakeAgent()
    cold = _cold(fed, {"sued": agent})
    assert cold.cold(OD, policy())
    with pytest.raises(ModelStarting) as err:
        await cold.ensure(OD, policy())
    assert err.value.status == 503 and err.value.code == "model_starting"
    assert 1 <= int(err.value.headers["retry-after"]) <= 12
    assert agent.calls[0]["model"] == OD and agent.calls[0]["waiting"] == 1
    assert cold.waiting == {}  # the queue place is given back


async def test_a_site_the_policy_excludes_is_never_asked(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"ost": "stopped"})  # ost takes up to internal
    agent = FakeAgent()
    cold = _cold(fed, {"ost": agent})
    assert not cold.cold(OD, policy(DataClass.confidential))
    await cold.ensure(OD, policy(DataClass.confidential))  # the router says why, not us
    assert agent.calls == []


async def test_a_model_warm_at_one_site_does_not_wait_for_a_cold_one(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    from verbund.config import BackendConfig

    warm = BackendConfig(name="west-od", url="http://west-od.invalid", models=[OD])
    fed.sites["west"].on_demand = {OD: OnDemandModel("ready", 5.0)}
    fed.apply_site("west", fed.sites["west"].config, [ModelConfig(name=OD)], [warm])
    sued = FakeAgent()
    cold = _cold(fed, {"sued": sued, "west": FakeAgent()})
    assert not cold.cold(OD, policy())
    await cold.ensure(OD, policy())
    assert sued.calls == []


async def test_a_site_already_starting_is_asked_first_and_a_failing_agent_is_skipped(
    tmp_path: Path,
) -> None:
    fed = _federation(tmp_path, {"west": "stopped", "sued": "starting", "ost": "stopped"})
    agents = {"west": FakeAgent(), "sued": FakeAgent(fail=True), "ost": FakeAgent()}
    cold = _cold(fed, agents)
    with pytest.raises(ModelStarting):
        await cold.ensure(OD, policy())
    assert len(agents["sued"].calls) == 1  # starting: asked first, but it failed
    assert len(agents["west"].calls) + len(agents["ost"].calls) == 1


async def test_a_full_queue_answers_at_once(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    agent = FakeAgent()
    cold = _cold(fed, {"sued": agent}, cold_start_queue=0)
    with pytest.raises(ModelStarting) as err:
        await cold.ensure(OD, policy())
    assert "queue is full" in err.value.message and agent.calls == []


async def test_demand_is_reported_while_in_use_and_once_when_quiet(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    agent = FakeAgent()
    now = [100.0]
    cfg = RoutingConfig()
    cold = ColdStart(fed, {"sued": agent}, asyncio.Event, cfg, clock=lambda: now[0])  # type: ignore[dict-item]
    cold.last_request[OD] = 99.0
    await cold.report_once()
    assert agent.calls[-1] == {
        "model": OD, "waiting": 0, "in_flight": {}, "idle_seconds": 1.0
    }  # fmt: skip
    now[0] = 1000.0  # long quiet
    await cold.report_once()
    n = len(agent.calls)
    await cold.report_once()
    assert len(agent.calls) == n  # told once, then silent


async def test_when_the_only_compliant_site_cannot_start_it_the_answer_is_a_clear_503(
    tmp_path: Path,
) -> None:
    from verbund.errors import NoBackendAvailable

    fed = _federation(tmp_path, {"sued": "stopped", "ost": "stopped"})
    sued, ost = FakeAgent(fail=True), FakeAgent()
    cold = _cold(fed, {"sued": sued, "ost": ost})
    # confidential: ost (internal) is excluded, sued's agent is away
    with pytest.raises(NoBackendAvailable) as err:
        await cold.ensure(OD, policy(DataClass.confidential))
    assert err.value.status == 503 and "sued" in err.value.message
    assert ost.calls == []


async def test_a_model_no_site_starts_costs_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    agent = FakeAgent()
    cold = _cold(fed, {"sued": agent})
    for name in (MODEL, "a-name-the-client-made-up"):
        assert not cold.starts(name) and not cold.cold(name, policy())
        await cold.ensure(name, policy())
    assert cold.last_request == {} and agent.calls == []  # no client text kept
    assert cold.starts(OD)
    assert not _cold(fed, {}).starts(OD)  # a site without an agent starts nothing


async def test_the_wait_is_bounded_on_the_injected_clock(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"sued": "stopped"})
    agent = FakeAgent()
    now = [0.0]

    def clock() -> float:
        now[0] += 400.0  # every look at the clock: minutes pass
        return now[0]

    cfg = RoutingConfig.model_validate({"cold_start_wait": 1000.0})
    cold = ColdStart(fed, {"sued": agent}, asyncio.Event, cfg, clock=clock)  # type: ignore[dict-item]
    with pytest.raises(ModelStarting):
        await asyncio.wait_for(cold.ensure(OD, policy()), 10)  # not 1000 s of real time
    assert agent.calls and cold.waiting == {}


async def test_a_backend_a_request_found_dead_does_not_count_as_available(
    tmp_path: Path,
) -> None:
    from verbund.config import BackendConfig

    fed = _federation(tmp_path, {"sued": "ready"})
    dead = BackendConfig(name="od:1", url="http://sued-od.invalid", models=[OD])
    fed.apply_site("sued", fed.sites["sued"].config, [ModelConfig(name=OD)], [dead])
    agent = FakeAgent()
    cold = _cold(fed, {"sued": agent})
    assert not cold.cold(OD, policy())
    assert cold.cold(OD, policy(), frozenset({"od:1"}))
    with pytest.raises(ModelStarting):  # it waits for another one (and asks for it)
        await cold.ensure(OD, policy(), frozenset({"od:1"}))
    assert agent.calls[0]["waiting"] == 1
